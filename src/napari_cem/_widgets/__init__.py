"""Thin napari dock widgets: they read layers, run the Qt-free core in thread workers,
show progress with a cancel button, and touch layers only on the main thread."""
