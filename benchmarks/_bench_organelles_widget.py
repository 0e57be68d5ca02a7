"""The Organelles widget's edits in a real viewer (bench_proofread.py --widget): the time from
a button press until the UI thread is idle again (the edit, the table, the features, the
layer's refresh and the canvas drawn), on the 512^3 volume of bench_proofread."""

from __future__ import annotations

import time

from _harness import row


def _idle(app) -> None:
    for _ in range(3):
        app.processEvents()


def widget_rows(ball_volume) -> list[str]:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cem._widgets.organelles import OrganellesWidget

    labels, centres = ball_volume()
    viewer = napari.Viewer()
    viewer.window._qt_window.resize(1920, 1080)
    layer = viewer.add_labels(labels, name="objects", scale=(8, 8, 8), units=("nm",) * 3)
    widget = OrganellesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    app = QApplication.instance()
    widget.objects.value = layer
    t0 = time.perf_counter()
    widget.measure_layer()
    while widget._worker is not None:
        app.processEvents()
        time.sleep(0.01)
    setup = time.perf_counter() - t0
    _idle(app)
    times = {}

    def press(name, button, before=None):
        if before is not None:
            before()
        _idle(app)
        t = time.perf_counter()
        button.clicked.emit()
        _idle(app)
        times[name] = (time.perf_counter() - t) * 1000

    def go_to_one():
        t = time.perf_counter()
        widget._on_rows_selected([1])  # a row click: select and jump
        _idle(app)
        times["row click (jump)"] = (time.perf_counter() - t) * 1000

    go_to_one()
    press("merge", widget.edits.merge_button, lambda: widget.table.select_labels([1, 2]))
    points = None

    def points_for_split():
        nonlocal points
        widget.edits.split_button.clicked.emit()  # first press: the points layer
        points = viewer.layers["split points"]
        points.add([centres[0], centres[1]])

    press("split", widget.edits.split_button, points_for_split)
    press("delete", widget.edits.delete_button, lambda: widget.table.select_labels([3]))
    press("dilate", widget.edits.dilate_button, lambda: widget.table.select_labels([5]))
    press("undo", widget.edits.undo_button)
    figures = ", ".join(f"{k} {v:.0f} ms" for k, v in times.items())
    count = widget.proofreader.count
    viewer.close()
    return [row(f"Organelles widget edits in a real viewer (1920x1080, 2D view), {labels.shape[0]}^3 uint32, "
                f"{count} objects", f"UI-thread time per press: {figures}; 'Measure this layer' "
                f"{setup:.1f} s in a worker")]


__all__ = ["widget_rows"]
