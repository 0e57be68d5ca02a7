"""How the docks lay out: status lines fill their row, and the demo's window fits its canvas."""

from __future__ import annotations

import numpy as np
import pytest


def test_text_label_fills_its_row_on_a_wide_dock(qtbot):
    """A short status line starts at the left edge of a wide dock, with the other rows, instead
    of floating at the width of its first text."""
    from magicgui.widgets import ComboBox, Container

    from napari_cem._widgets._common import text_label

    label = text_label("Compared with mito ground truth.")
    box = ComboBox(choices=["a", "b"], label="Ground truth")
    panel = Container(widgets=[label, box])
    qtbot.addWidget(panel.native)
    panel.native.resize(900, 200)
    panel.native.show()
    qtbot.waitExposed(panel.native)
    row_width = box.native.parentWidget().width()
    assert label.native.width() > 0.9 * row_width
    label.value = "A much longer message " * 20  # wraps within the row rather than widening it
    qtbot.wait(50)
    assert panel.native.width() == 900


@pytest.mark.slow
def test_fit_window_fits_the_layers_to_the_resized_canvas(make_napari_viewer, qtbot):
    """The demo adds its layers before sizing the window to the screen: the view is fitted
    again to the new canvas (a second reset changes nothing)."""
    from napari_cem._widgets._layers import camera_of
    from napari_cem.widgets_registry import fit_window

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(640, 480)
    viewer.add_image(np.zeros((64, 64), np.uint8))
    qtbot.wait(100)
    camera = camera_of(viewer)
    small = camera.zoom
    fit_window(viewer)
    qtbot.waitUntil(lambda: camera.zoom != small, timeout=5000)
    fitted = camera.zoom
    viewer.reset_view()
    assert camera.zoom == pytest.approx(fitted)
