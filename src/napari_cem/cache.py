"""Where napari-cem keeps downloaded weights and other reusable files."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NAPARI_CEM_CACHE"


def cache_dir(create: bool = False) -> Path:
    """``$NAPARI_CEM_CACHE`` if set, else the platform's user cache folder for napari-cem."""
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("napari-cem", appauthor=False))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
