"""napari-cem: the CEM500K workflow for cellular electron microscopy, in napari.

The core (io, synthetic, patches, dedup, ...) is Qt-free and imports its heavy
dependencies lazily, so ``import napari_cem`` stays fast inside napari.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
