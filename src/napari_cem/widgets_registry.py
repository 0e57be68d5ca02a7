"""The plugin's dock widgets, in the order the demo docks them."""

from __future__ import annotations

PLUGIN_NAME = "napari-cem"


def dock_widget_names() -> list[str]:
    """Display names of every widget our napari.yaml contributes (read from the manifest)."""
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest(PLUGIN_NAME)
    return [w.display_name for w in manifest.contributions.widgets or []]


def add_all_dock_widgets(viewer) -> list:
    """Dock every napari-cem widget on the right, tabbed, the first one in front."""
    docked = []
    for name in dock_widget_names():
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, name, tabify=bool(docked))
        docked.append(widget)
    return docked
