"""When a run stops: its length in steps, its time limit, or a signal, agreed by every process.

Ctrl-C or SIGTERM (what schedulers send before killing a job) finishes the current step, saves and stops;
a second Ctrl-C stops at once without saving. With several processes, a signal to any of them or the time
limit reached on any rank's clock stops all of them after the same step (one tiny all-reduce on the CPU
per step). The training time so far (``elapsed``) is checkpointed, so ``train.minutes`` counts the time
of every session of a resumed run.

Code outside the engine can stop a run too: each of :attr:`Stopping.checks` (a callable returning a reason,
or ``None`` to go on) is asked after every step, and a reason stops the run as a signal does (the current
step finishes, the run saves and ends ``interrupted``); ``stopped_by`` keeps the reason. ``t2i study``'s
search uses this to prune a trial the moment it is diagnosed (:mod:`t2i.study.pruning`).
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any, Callable, Iterator

from . import distributed

__all__ = ["Stopping"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopping:
    """Decides, after each step, whether the run goes on. ``total_steps`` or ``minutes`` may be ``None``."""

    def __init__(self, total_steps: int | None, minutes: float | None, world_size: int = 1):
        self.total_steps, self.minutes, self.world_size = total_steps, minutes, world_size
        self.elapsed = 0.0  # training seconds, over every session of a resumed run
        self.signal: str | None = None  # the name of the signal that asked the run to stop
        self.checks: list[Callable[[], str | None]] = []  # asked after each step; a reason stops the run
        self.stopped_by: str | None = None  # the reason of the check that stopped it
        self._time_up = False
        self._session_start = (0.0, 0.0)  # (elapsed, clock) when this session's loop began

    def start(self) -> None:
        """Start this session's clock (at the top of the training loop)."""
        self._session_start = (self.elapsed, time.perf_counter())
        self._time_up = self._over_time()

    def done(self, step: int) -> bool:
        """The run has reached its length, or its time limit (agreed by every rank in :meth:`tick`)."""
        if self.total_steps is not None and step >= self.total_steps:
            return True
        return self._time_up

    def tick(self) -> None:
        """After each step: advance ``elapsed`` and agree with the other ranks on the time limit and signals."""
        start_elapsed, clock = self._session_start
        self.elapsed = start_elapsed + time.perf_counter() - clock
        time_up = self._over_time()
        for check in self.checks if self.signal is None else ():
            reason = check()
            if reason:
                self.signal, self.stopped_by = "a stop check", reason
                break
        if self.world_size > 1:
            time_up, signalled = distributed.any_rank([time_up, self.signal is not None])
            if signalled and self.signal is None:
                self.signal = "a signal to another process"
        self._time_up = time_up

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Ask the run to stop on Ctrl-C / SIGTERM for the duration of the block (main thread only)."""
        try:
            previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        except ValueError:  # not in the main thread: no handling
            previous = {}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # A second Ctrl-C stops now, without saving. A SIGTERM never does: torchrun sends one to every
        # process after the terminal's SIGINT, and schedulers send one before killing a job.
        if self.signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = self.signal or signal.Signals(signum).name

    def _over_time(self) -> bool:
        return self.minutes is not None and self.elapsed >= self.minutes * 60

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.elapsed = float(state["elapsed"])
