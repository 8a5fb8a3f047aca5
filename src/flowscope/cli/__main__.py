"""``python -m flowscope.cli``: the ``flowscope`` command."""

import sys

from . import main

sys.exit(main())
