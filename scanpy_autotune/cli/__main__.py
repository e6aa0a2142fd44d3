"""``python -m scanpy_autotune.cli``: the ``scanpy-autotune`` command."""

import sys

from . import main

sys.exit(main())
