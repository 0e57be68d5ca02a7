"""What the README screenshot scripts share: spin Qt, draw labels in one colour, save a clean shot."""

from __future__ import annotations

import time


def pump(until, timeout_s: float) -> bool:
    """Spin the Qt event loop until *until()* is true (False on timeout)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if until():
            return True
        time.sleep(0.02)
    return False


def one_colour(layer, colour: str, contour: int = 0) -> None:
    """Show a Labels layer's label 1 in *colour* (outlined when *contour* > 0)."""
    import napari

    layer.contour = contour
    layer.colormap = napari.utils.DirectLabelColormap(color_dict={None: "transparent", 1: colour})


def open_viewer(image, image_name: str, labels, labels_name: str, widget_class, dock_name: str):
    """A 1800 x 1000 viewer with *image*, *labels* outlined in yellow and the dock widget;
    returns (viewer, labels layer, widget)."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1800, 1000)
    viewer.add_image(image, name=image_name)
    layer = viewer.add_labels(labels, name=labels_name)
    one_colour(layer, "yellow", contour=2)
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget, name=dock_name, area="right")
    return viewer, layer, widget


def save_screenshot(viewer, path) -> None:
    """Close notification toasts (they would cover the canvas), let the canvas settle, save."""
    from qtpy.QtWidgets import QApplication

    pump(lambda: False, 2)
    for w in QApplication.instance().allWidgets():
        if type(w).__name__ == "NapariQtNotification":
            w.close()
    pump(lambda: False, 0.5)
    viewer.screenshot(str(path), canvas_only=False)
