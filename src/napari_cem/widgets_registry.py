"""The plugin's dock widgets, in the order the demo docks them, and how the demo lays them out."""

from __future__ import annotations

PLUGIN_NAME = "napari-cem"
LAYER_DOCKS_MIN = 250  # px for napari's layer controls and list on the left
SPLITTER = 12  # px of each dock area's handle and margins


def dock_widget_names() -> list[str]:
    """Display names of every widget our napari.yaml contributes (read from the manifest)."""
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest(PLUGIN_NAME)
    return [w.display_name for w in manifest.contributions.widgets or []]


def add_all_dock_widgets(viewer) -> list:
    """Dock every napari-cem widget on the right, tabbed, the first one (Load EM volume) in
    front, with tab titles that are read in full; returns the widgets."""
    docks, widgets = [], []
    for name in dock_widget_names():
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, name, tabify=bool(docks))
        dock.setWindowTitle(name)  # the tab says "Segment", not "Segment (napari-cem)"
        docks.append(dock)
        widgets.append(widget)
    _readable_tabs(viewer.window._qt_window)
    if docks:
        from qtpy.QtCore import QTimer

        # once napari's own "show the dock just added" has run: the first tab in front
        QTimer.singleShot(0, docks[0].raise_)
    return widgets


def fit_window(viewer) -> None:
    """Size the window to the screen's free area and share its width: napari's layer docks
    on the left as narrow as they go, the canvas at least half, the napari-cem docks the rest
    (as wide as all their tab titles when that fits; never narrower than they need). The
    layers are then fitted to the resized canvas (they were fitted to the first, smaller one)."""
    from qtpy.QtCore import Qt, QTimer

    window = viewer.window._qt_window
    screen = window.screen().availableGeometry()
    window.setGeometry(screen)
    left_docks = _docks_in(window, Qt.DockWidgetArea.LeftDockWidgetArea)
    right_docks = _docks_in(window, Qt.DockWidgetArea.RightDockWidgetArea)
    left = max([LAYER_DOCKS_MIN, *(d.minimumSizeHint().width() for d in left_docks)])
    tabs = sum(window.fontMetrics().horizontalAdvance(d.windowTitle()) + 26 for d in right_docks)
    right = min(tabs, screen.width() // 2 - left - 2 * SPLITTER)
    right = max([right, *(d.minimumSizeHint().width() for d in right_docks)])
    for docks, width in ((left_docks, left), (right_docks, right)):
        if docks:
            window.resizeDocks(docks, [width] * len(docks), Qt.Orientation.Horizontal)
    QTimer.singleShot(0, viewer.reset_view)  # once the canvas has its new size


def _readable_tabs(window) -> None:
    """Dock tabs at the top, never shortened to "Se..." (scroll arrows when they do not fit)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QTabBar, QTabWidget

    for area in (Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.LeftDockWidgetArea):
        window.setTabPosition(area, QTabWidget.TabPosition.North)
    for bar in window.findChildren(QTabBar):
        bar.setElideMode(Qt.TextElideMode.ElideNone)
        bar.setUsesScrollButtons(True)
        bar.setExpanding(False)


def _docks_in(window, area) -> list:
    """The docked (not floating) dock widgets of *window* in *area*."""
    from qtpy.QtWidgets import QDockWidget

    return [d for d in window.findChildren(QDockWidget)
            if window.dockWidgetArea(d) == area and not d.isFloating()]
