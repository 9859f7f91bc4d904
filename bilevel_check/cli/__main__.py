"""``python -m bilevel_check.cli``: the same as the ``bilevel-check`` command."""

import sys

from . import main

sys.exit(main())
