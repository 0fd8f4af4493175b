"""Start-up: wall time of ``t2i --help``, ``t2i list`` and ``t2i plugins`` (a figure, not a timed test).

Each command runs ``--repeats`` times in a fresh ``python -m t2i`` process (the first run, which may read
files from a cold disk, is not counted); the script prints the median and the fastest run per command,
and whether torch was imported to answer ``t2i list`` (it should not be: plugins register their classes
by ``"module:Name"`` reference, imported when a component is built).

Run: ``.venv/bin/python benchmarks/startup.py`` (``--repeats N``; ``T2I_LOAD_PLUGINS`` is honoured as
always, e.g. ``T2I_LOAD_PLUGINS=`` for the core's built-ins alone).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["list"], ["plugins"])
TARGET_S = 1.0  # a start-up a person does not notice waiting for


def wall_time(args: list[str]) -> float:
    """Seconds for ``python -m t2i ARGS`` to run to the end in a new process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "t2i", *args], check=True, capture_output=True,
                   env={**os.environ, "COLUMNS": "200"})
    return time.perf_counter() - start


def torch_imported_by_list() -> bool:
    """Whether filling every registry (what ``t2i list`` does) imports torch."""
    code = ("import sys, t2i.plugins; from t2i.registry import KINDS; "
            "[t2i.plugins.registry(k).names() for k in KINDS]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return out.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (after one untimed run)")
    args = parser.parse_args()
    python = f"python {sys.version.split()[0]}"
    print(f"t2i start-up, {args.repeats} runs per command after one warm-up, {python}, {os.cpu_count()} CPUs")
    for command in COMMANDS:
        wall_time(command)
        times = [wall_time(command) for _ in range(args.repeats)]
        median = statistics.median(times)
        verdict = "ok" if median <= TARGET_S else f"over the {TARGET_S:g} s target"
        print(f"  t2i {' '.join(command):<8} median {median:6.3f} s   fastest {min(times):6.3f} s   {verdict}")
    print(f"  torch imported to list the components: {'yes' if torch_imported_by_list() else 'no'}")


if __name__ == "__main__":
    main()
