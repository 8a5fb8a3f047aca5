"""``python -m flowscope``: the ``flowscope`` command."""

import sys

from .cli import main

sys.exit(main())
