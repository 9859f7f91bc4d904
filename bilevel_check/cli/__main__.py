"""``python -m bilevel_check.cli``: the same as the ``bilevel-check`` command.

Imports only the standard library. The command line is the outer layer and may import
any room.
"""

import sys

from . import main

sys.exit(main())
