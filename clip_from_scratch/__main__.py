"""``python -m clip_from_scratch ...`` is the same as the ``clip-from-scratch`` command."""
import sys

from .cli import main

sys.exit(main())
