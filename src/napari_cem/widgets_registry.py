"""The plugin's dock widgets, in the order the demo docks them, and how the demo lays them out."""

from __future__ import annotations

PLUGIN_NAME = "napari-cem"
DOCK_SHARE = 0.26  # of the window width for the tabbed napari-cem docks on the right
LAYER_DOCKS_SHARE = 0.2  # for napari's layer controls and list on the left (at most 300 px)


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


def fit_window(viewer, docks_share: float = DOCK_SHARE) -> None:
    """Size the window to the screen's free area; the right-hand docks get *docks_share* of
    its width and napari's layer docks on the left a fifth (each never less than it needs),
    so that the canvas keeps about half the window."""
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window
    screen = window.screen().availableGeometry()
    window.setGeometry(screen)
    widths = {Qt.DockWidgetArea.RightDockWidgetArea: int(screen.width() * docks_share),
              Qt.DockWidgetArea.LeftDockWidgetArea: min(300, int(screen.width() * LAYER_DOCKS_SHARE))}
    for area, width in widths.items():
        docks = [d for d in window.findChildren(_dock_class())
                 if window.dockWidgetArea(d) == area and not d.isFloating()]
        if docks:
            width = max(width, *(d.minimumSizeHint().width() for d in docks))
            window.resizeDocks(docks, [width] * len(docks), Qt.Orientation.Horizontal)


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


def _dock_class():
    from qtpy.QtWidgets import QDockWidget

    return QDockWidget
