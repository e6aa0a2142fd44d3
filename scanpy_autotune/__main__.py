"""``python -m scanpy_autotune``: the ``scanpy-autotune`` command (as ``python -m scanpy_autotune.cli``)."""

import sys

from .cli import main

sys.exit(main())
