"""``python -m napari_cem.cli``: the ``napari-cem`` command (also under torchrun)."""

import sys

from . import main

sys.exit(main())
