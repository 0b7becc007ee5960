"""``python -m wsspec.testing.fuzz URL``: the same as ``wsspec fuzz URL``."""

import sys

from .command import main

sys.exit(main())
