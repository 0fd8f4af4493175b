"""``python -m t2i`` (and ``torchrun -m t2i run ...``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
