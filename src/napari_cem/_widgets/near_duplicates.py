"""Dock widget "Near-duplicates": hash the patches of an Image layer, show the groups, export.

The heavy work (tiling, dHash, grouping, export) runs in napari thread workers through the
Qt-free core in ``napari_cem.curate`` / ``napari_cem.export``; this widget only reads the
layer, shows progress, and draws the result on the main thread:

* an overlay Shapes layer with the patches of the slice on screen (any plane), coloured by
  group, exemplars with a thick white edge;
* a gallery of the largest groups (exemplar first); clicking a patch moves the viewer there;
* a cutoff slider that regroups the stored hashes and updates the counts live.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, PushButton, Slider, SpinBox

from ._common import (
    ProgressRow,
    notify_error,
    notify_info,
    output_problem,
    scroll_inside,
    text_label,
)
from ._jobs import JobRunner, JobWidget
from ._layers import camera_of, full_data, image_choices, slice_on_screen, voxel_size
from ._state import state_for

_PLANE_ORDER = {"xy": (0, 1, 2), "xz": (1, 0, 2), "yz": (2, 0, 1)}  # dims order that shows a plane
GALLERY_GROUPS = 8
GALLERY_MEMBERS = 6
THUMB = 72


def group_colours(n_groups: int, seed: int = 7) -> np.ndarray:
    """Distinct RGBA colours per group (golden-ratio hues), stable for a given group id."""
    from skimage.color import hsv2rgb

    hues = (np.arange(n_groups) * 0.618033988749895 + (seed % 10) / 10) % 1.0
    sats = 0.65 + 0.35 * np.random.default_rng(seed).random(n_groups)
    out = np.ones((n_groups, 4), np.float32)
    out[:, :3] = hsv2rgb(np.stack([hues, sats, np.ones(n_groups)], axis=1)[None])[0]
    return out


class NearDuplicatesWidget(JobWidget):
    """Find near-duplicate patches in an Image layer (CEM500K curation) and export exemplars."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.result = None  # the CurationResult of the last run
        self._volume = None  # the uint8 volume the result was computed on
        self._layer = None
        self._overlay = None
        self._pending_cutoff = None

        self.image = ComboBox(label="Image", choices=lambda _w=None: image_choices(self.viewer),
                              tooltip="The EM volume or image to curate.")
        self.patch_size = SpinBox(label="Patch size", value=224, min=16, max=4096, step=16,
                                  tooltip="Square patches, no overlap, from the top-left corner; an edge "
                                          "remainder of at least half a patch is kept.")
        self.planes = ComboBox(label="Planes", choices=["auto", "xy", "all"], value="auto",
                               tooltip="auto: xy, xz and yz when z spacing is within 20 % of xy "
                                       "(isotropic), xy only otherwise.")
        self.grouping = ComboBox(label="Grouping", choices=["greedy", "components"], value="greedy",
                                 tooltip="greedy: the CEM500K procedure (one exemplar and everything "
                                         "within the cutoff of it). components: transitive groups.")
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1,
                            tooltip="Seed of the shuffle that picks exemplars.")
        self.run_button = PushButton(text="Find near-duplicates")
        self.progress = ProgressRow()
        self.cutoff = Slider(label="Cutoff", value=12, min=0, max=32, tracking=True,
                             tooltip="Hamming distance between dHashes (64 bits) still called a "
                                     "near-duplicate, inclusive. CEM500K used 12.")
        self.counts = text_label("No result yet.")
        self.show_overlay = CheckBox(label="Show overlay on the slice", value=True)
        self.export_dir = FileEdit(label="Export to", mode="d")
        self.export_button = PushButton(text="Export curated patches", enabled=False)
        super().__init__(widgets=[
            self.image, self.patch_size, self.planes, self.grouping, self.seed, self.run_button,
            self.progress, self.cutoff, self.counts, self.show_overlay, self.export_dir,
            self.export_button,
        ])
        self.gallery = _make_gallery(self._on_gallery_click)
        self.native.layout().addWidget(self.gallery)
        scroll_inside(self)
        self.cutoff.enabled = False
        self.jobs = JobRunner(self.progress, name="Finding near-duplicates", on_running=self._set_running)
        self.regrouping = JobRunner(name="Regrouping")  # the cutoff slider: quick, latest value wins

        self.run_button.changed.connect(lambda: self.run())
        self.cutoff.changed.connect(self._on_cutoff)
        self.show_overlay.changed.connect(lambda v: self.update_overlay())
        self.export_button.changed.connect(lambda: self.export())
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        self.viewer.dims.events.order.connect(self._on_dims)

    # -- layer choice ---------------------------------------------------------------------
    def _refresh_choices(self, _event=None) -> None:
        self.image.reset_choices()

    def _on_layer_removed(self, event) -> None:
        if event.value is self._overlay:
            self._overlay = None
        if event.value is self._layer:
            self._set_result(None)
            self._layer = None
        self._refresh_choices()

    # -- running --------------------------------------------------------------------------
    def run(self):
        """Hash and group the chosen layer in a thread worker; returns the worker."""
        layer = self.image.value
        if layer is None:
            notify_error("Open an EM image first (File > Open, or the Load EM volume widget).")
            return None
        data = full_data(layer)
        options = {"source": layer.name, "voxel_size": voxel_size(layer), "planes": self.planes.value,
                   "patch_size": int(self.patch_size.value), "cutoff": int(self.cutoff.value),
                   "grouping": self.grouping.value, "seed": int(self.seed.value)}
        return self.jobs.start(_curate_job, data, options, message=f"Hashing the patches of {layer.name} ...",
                               on_result=lambda r: self._on_result(layer, r),
                               cancelled="Cancelled; the previous result is unchanged.")

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.export_button.enabled = not running and self.result is not None
        self.cutoff.enabled = not running and self.result is not None

    def _on_result(self, layer, payload) -> None:
        result, volume = payload
        self._layer = layer
        self._volume = volume
        self._set_result(result)
        self.progress.finish(f"{layer.name}: {result.summary()}.")

    # -- cutoff slider --------------------------------------------------------------------
    def _on_cutoff(self, value: int) -> None:
        if self.result is None:
            return
        self._pending_cutoff = int(value)
        if not self.regrouping.running:
            self._start_regroup()

    def _start_regroup(self):
        cutoff, self._pending_cutoff = self._pending_cutoff, None
        return self.regrouping.start(self.result.regroup, cutoff, on_result=self._on_regrouped,
                                     then=self._on_regroup_finished)

    def _on_regrouped(self, result) -> None:
        if self.result is not None:
            self._set_result(result)

    def _on_regroup_finished(self) -> None:
        if self._pending_cutoff is not None and self.result is not None:
            self._start_regroup()  # the slider moved on while we worked: latest value wins

    # -- showing --------------------------------------------------------------------------
    def _set_result(self, result) -> None:
        self.result = result
        state_for(self.viewer).curation = None if result is None else (result, self._volume)
        if result is None:
            self.counts.value = "No result yet."
            self.gallery.clear()
            self._remove_overlay()
            self._set_running(False)
            return
        self.counts.value = (f"{result.n_patches:,} patches · {result.n_groups:,} groups · "
                             f"{result.n_kept:,} kept · {100 * result.fraction_removed:.1f} % removed "
                             f"(cutoff {result.params['cutoff']})")
        self._colours = group_colours(max(result.n_groups, 1))
        self._sizes = result.group_sizes()
        self._set_running(self.jobs.running)
        self.update_overlay()
        self.update_gallery()

    def current_plane_slice(self):
        """(plane, slice index) of the result's layer as the viewer shows it now, or None."""
        layer = self._layer
        if layer is None:
            return None
        screen = slice_on_screen(self.viewer, layer)
        if screen is None:
            return None
        return screen.plane, screen.index if screen.index is not None else 0

    def _on_dims(self, _event=None) -> None:
        if self.result is not None:
            self.update_overlay()

    def _remove_overlay(self) -> None:
        if self._overlay is not None and self._overlay in self.viewer.layers:
            self.viewer.layers.remove(self._overlay)
        self._overlay = None

    def update_overlay(self) -> None:
        """Draw the patches of the slice on screen, coloured by group; exemplars edged white."""
        result, layer = self.result, self._layer
        if result is None or layer is None or not self.show_overlay.value:
            self._remove_overlay()
            return
        if layer not in self.viewer.layers:  # being removed (or the viewer is closing)
            return
        where = self.current_plane_slice()
        rows = result.rows_on_slice(*where) if where is not None else np.zeros(0, int)
        rects = [_rectangle(result.provenance[i], layer.ndim) for i in rows]
        groups = result.group[rows]
        multi = self._sizes[groups] > 1
        face = self._colours[groups].copy()
        face[:, 3] = np.where(multi, 0.30, 0.0)
        edge = self._colours[groups].copy()
        edge[~multi] = (0.6, 0.6, 0.6, 0.8)
        is_ex = result.exemplar[rows]
        edge[is_ex & multi] = (1.0, 1.0, 1.0, 1.0)
        widths = np.where(is_ex, 6.0, 2.0) * float(np.mean(layer.scale[-2:]))
        kwargs = {"scale": layer.scale, "translate": layer.translate}
        if self._overlay is None or self._overlay not in self.viewer.layers:
            from napari.layers import Shapes

            self._overlay = Shapes(ndim=layer.ndim, name=f"near-duplicates ({layer.name})",
                                   opacity=0.9, **kwargs)
            self.viewer.add_layer(self._overlay)
            # just above its image: a segmentation or a Fine-tune preview stays on top of it
            layers = self.viewer.layers
            layers.move(layers.index(self._overlay), layers.index(layer) + 1)
            layers.selection.active = layer
        ov = self._overlay
        ov.data = []
        if rects:
            ov.add_rectangles(rects, edge_width=widths, edge_color=edge, face_color=face)
            ov.features = {"group": groups, "exemplar": is_ex, "group_size": self._sizes[groups]}
        ov.refresh()

    def update_gallery(self) -> None:
        """Largest groups, exemplar first (★), with a thumbnail of each patch."""
        from qtpy.QtCore import Qt
        from qtpy.QtGui import QIcon, QImage, QPixmap
        from qtpy.QtWidgets import QListWidgetItem

        from ..patches import read_patch

        self.gallery.clear()
        result = self.result
        if result is None or self._volume is None:
            return
        for g_rows in result.largest_groups(GALLERY_GROUPS, max_members=GALLERY_MEMBERS + 1):
            for i in g_rows:
                p = result.provenance[i]
                patch = np.asarray(read_patch(self._volume, str(p["plane"]), int(p["slice"]), int(p["y"]),
                                              int(p["x"]), int(p["height"]), int(p["width"])))
                patch = np.ascontiguousarray(patch, dtype=np.uint8)
                h, w = patch.shape
                qimage = QImage(patch.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
                pixmap = QPixmap.fromImage(qimage).scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio)
                star = "★ " if result.exemplar[i] else ""
                item = QListWidgetItem(QIcon(pixmap), f"{star}g{result.group[i]} {p['plane']} {p['slice']}")
                item.setData(Qt.ItemDataRole.UserRole, int(i))
                item.setToolTip(f"group {result.group[i]} ({self._sizes[result.group[i]]} patches), "
                                f"{'exemplar, ' if result.exemplar[i] else ''}plane {p['plane']}, "
                                f"slice {p['slice']}, y {p['y']}, x {p['x']}, {p['height']}x{p['width']}")
                self.gallery.addItem(item)

    def _on_gallery_click(self, item) -> None:
        from qtpy.QtCore import Qt

        self.go_to_patch(int(item.data(Qt.ItemDataRole.UserRole)))

    def go_to_patch(self, row: int) -> None:
        """Show patch *row* of the result: its plane, its slice, centred on screen."""
        from ..patches import provenance_to_volume_coords

        result, layer = self.result, self._layer
        if result is None or layer is None:
            return
        p = result.provenance[row]
        plane = str(p["plane"])
        if layer.ndim == 2:
            centre = np.array([p["y"] + (p["height"] - 1) / 2, p["x"] + (p["width"] - 1) / 2])
        else:
            z, y, x = provenance_to_volume_coords(plane, int(p["slice"]), int(p["y"]), int(p["x"]))
            corner = np.array([z, y, x], float)
            extent = {"xy": (0, p["height"], p["width"]), "xz": (p["height"], 0, p["width"]),
                      "yz": (p["height"], p["width"], 0)}[plane]
            centre = corner + np.maximum(np.array(extent, float) - 1, 0) / 2
            offset = self.viewer.dims.ndim - layer.ndim
            order = tuple(range(offset)) + tuple(a + offset for a in _PLANE_ORDER[plane])
            if self.viewer.dims.ndisplay != 2:
                self.viewer.dims.ndisplay = 2
            self.viewer.dims.order = order
        world = np.asarray(layer.data_to_world(centre), float)
        offset = self.viewer.dims.ndim - layer.ndim
        point = list(self.viewer.dims.point)
        point[offset:] = list(world)
        self.viewer.dims.point = point
        # the camera centre is given in the order of the displayed axes
        camera_of(self.viewer).center = tuple(point[d] for d in self.viewer.dims.displayed)
        self.update_overlay()

    # -- export ---------------------------------------------------------------------------
    def export(self, out_dir=None):
        """Write the kept exemplars and manifest.csv in a thread worker; returns the worker."""
        if self.result is None:
            notify_error("Run 'Find near-duplicates' first.")
            return None
        if out_dir is None:
            text = str(self.export_dir.line_edit.value).strip()
            if text in ("", "."):
                notify_error("Choose an export folder first.")
                return None
            out_dir = text
        problem = output_problem(out_dir, "export folder")
        if problem:
            notify_error(problem)
            return None
        return self.jobs.start(_export_job, self.result, self._volume, out_dir,
                               message=f"Exporting {self.result.n_kept:,} patches ...",
                               total=self.result.n_kept, on_result=self._on_exported,
                               cancelled="Export cancelled; the folder's manifest lists this "
                                         "volume only once an export of it finishes.")

    def _on_exported(self, summary) -> None:
        message = (f"Exported {summary['written']:,} exemplar patches of {summary['source']} "
                   f"to {summary['out_dir']} (manifest.csv).")
        self.progress.finish(message)
        notify_info(message)


def _rectangle(p, ndim: int) -> np.ndarray:
    """Corner coordinates (in the layer's data space) of one patch, on its slice."""
    r0, c0 = p["y"] - 0.5, p["x"] - 0.5
    r1, c1 = r0 + p["height"], c0 + p["width"]
    corners = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)
    if ndim == 2:
        return corners
    s = np.full((4, 1), float(p["slice"]))
    plane = str(p["plane"])
    if plane == "xy":
        return np.hstack([s, corners])
    if plane == "xz":  # rows are z, columns x, slice is y
        return np.column_stack([corners[:, 0], s[:, 0], corners[:, 1]])
    return np.column_stack([corners[:, 0], corners[:, 1], s[:, 0]])  # yz: rows z, columns y, slice x


def _make_gallery(on_click):
    from qtpy.QtCore import QSize
    from qtpy.QtWidgets import QListView, QListWidget

    gallery = QListWidget()
    gallery.setViewMode(QListView.ViewMode.IconMode)
    gallery.setIconSize(QSize(THUMB, THUMB))
    gallery.setResizeMode(QListView.ResizeMode.Adjust)
    gallery.setMovement(QListView.Movement.Static)
    gallery.setWordWrap(True)
    gallery.setGridSize(QSize(THUMB + 24, THUMB + 34))
    gallery.setMinimumHeight(3 * (THUMB + 34))
    gallery.setToolTip("Largest groups of near-duplicates, exemplar (★) first. Click a patch to "
                       "go to it in the volume.")
    gallery.itemClicked.connect(on_click)
    return gallery


def _curate_job(data, options: dict, progress, should_stop):
    """Worker: standardise if needed, hash, group; returns (result, the uint8 volume)."""
    import pandas  # noqa: F401  (napari's Shapes features import it: pay that here, not in the UI)

    from ..curate import find_near_duplicates

    volume = data
    if getattr(data, "dtype", None) != np.uint8:
        from ..io import standardize

        progress(0, 0, "standardising")
        volume, _info = standardize(data, rgb=False)
        if hasattr(volume, "compute") and volume.nbytes < 2**30:
            volume = volume.compute()
    result = find_near_duplicates(volume=volume, progress=progress, should_stop=should_stop, **options)
    return result, volume


def _export_job(result, volume, out_dir, progress, should_stop):
    """Worker: write the exemplars and the manifest; returns the export summary."""
    from ..export import export_curated

    summary = export_curated(result=result, volume=volume, out_dir=out_dir, skip_done=False,
                             progress=progress, should_stop=should_stop)
    summary["out_dir"] = str(out_dir)
    return summary
