"""``python -m t2i.study.worker CONFIG RUN_DIR``: one run of a study in its own process (``t2i study run
--jobs N``). The same code as the sequential path (:func:`t2i.study.runner.run_trial`): it trains or
resumes the run and writes ``RUN_DIR/trial.json``. Exit code 0 finished, 1 diverged, 130 interrupted,
3 crashed."""

from __future__ import annotations

import sys

from .runner import run_trial

EXIT_CODES = {"finished": 0, "diverged": 1, "interrupted": 130}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m t2i.study.worker CONFIG RUN_DIR", file=sys.stderr)
        return 2
    state = run_trial(args[0], args[1], quiet=True)
    if state.get("message"):
        print(f"{state['status']}: {state['message']}", file=sys.stderr)
    return EXIT_CODES.get(state["status"], 3)


if __name__ == "__main__":
    sys.exit(main())
