"""``python -m t2i.study.worker CONFIG RUN_DIR [--prune-on-health] [--stop-file PATH]``: one run of a study in
its own process (``t2i study run --jobs N``). The same code as the sequential path
(:func:`t2i.study.runner.run_trial`): it trains or resumes the run and writes ``RUN_DIR/trial.json``. A
search's trial is pruned at its first error-level health verdict (``--prune-on-health``) or when the search
writes ``PATH`` (``--stop-file``). Exit code 0 finished, 1 diverged, 4 pruned, 130 interrupted, 3 crashed."""

from __future__ import annotations

import sys

from .runner import run_trial

EXIT_CODES = {"finished": 0, "diverged": 1, "pruned": 4, "interrupted": 130}
USAGE = "usage: python -m t2i.study.worker CONFIG RUN_DIR [--prune-on-health] [--stop-file PATH]"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    prune_on_health = "--prune-on-health" in args
    if prune_on_health:
        args.remove("--prune-on-health")
    stop_file = None
    if "--stop-file" in args:
        at = args.index("--stop-file")
        if at + 1 >= len(args):
            print(USAGE, file=sys.stderr)
            return 2
        stop_file = args[at + 1]
        del args[at:at + 2]
    if len(args) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    state = run_trial(args[0], args[1], quiet=True, prune_on_health=prune_on_health, stop_file=stop_file)
    if state.get("message"):
        print(f"{state['status']}: {state['message']}", file=sys.stderr)
    return EXIT_CODES.get(state["status"], 3)


if __name__ == "__main__":
    sys.exit(main())
