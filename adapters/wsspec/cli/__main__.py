"""``python -m wsspec.cli``: the ``wsspec`` command."""

from . import main

raise SystemExit(main())
