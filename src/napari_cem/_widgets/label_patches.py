"""Dock widget "Label patches": label curated patches informative / uninformative, train a
classifier on the labels, filter the rest (SPEC "Informative filter").

* The patches come from an export folder (manifest.csv + patches/) or from the live result
  of the Near-duplicates widget in the same viewer.
* A page of patches (8 x 8) is shown as an Image layer "patch mosaic" with a Shapes layer of
  coloured frames: green informative, red uninformative, grey unlabelled. With the mosaic
  layer selected, a click on a patch cycles unlabelled -> informative -> uninformative ->
  unlabelled; keys: i / u / 0 (or Backspace) label the patch under the cursor, n / p change
  page. Every change is saved at once (atomically) to labels.csv.
* Train runs the chosen classifier in a thread worker (progress, Cancel), shows the
  cross-validated AUROC and writes P(informative) on every frame; "Label next most
  uncertain" shows the unlabelled patches the classifier is least sure about.
* The threshold slider updates the kept / dropped counts live; "Export informative
  patches" writes them in the export format plus a p_informative column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    PushButton,
)

from ._common import (
    ProgressRow,
    notify_error,
    notify_info,
    output_problem,
    scroll_inside,
    text_label,
)
from ._jobs import JobRunner, JobWidget
from ._state import state_for

GRID = 8  # patches per row and column of a page
GAP = 12  # pixels between cells of the mosaic
MAX_CELL = 256
COLOURS = {
    "informative": (0.15, 0.9, 0.25, 1.0),
    "uninformative": (1.0, 0.2, 0.2, 1.0),
    None: (0.55, 0.55, 0.55, 0.45),
}
ORDERS = ("as exported", "unlabelled first", "most uncertain first")
MODEL_CHOICES = [("random forest on 4 features (paper's light model)", "rf"),
                 ("ResNet50 encoder features + logistic regression", "encoder")]


class LabelPatchesWidget(JobWidget):
    """Label patches informative / uninformative, train a classifier, export the informative."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.patchset = None
        self.store = None
        self.p_informative = None  # per patch, after training
        self.classifier = None
        self.page = 0
        self._order = np.zeros(0, int)
        self._page_indices = np.zeros(0, int)
        self._cell = 224
        self._mosaic = None
        self._frames = None
        self._features = {}  # (model, weights) -> features of the whole set

        self.folder = FileEdit(label="Export folder", mode="d",
                               tooltip="A curation export: manifest.csv and patches/ (Near-duplicates "
                                       "widget or 'napari-cem curate'). labels.csv is kept there.")
        self.open_button = PushButton(text="Open folder")
        self.live_button = PushButton(text="Use the Near-duplicates result",
                                      tooltip="Label the kept exemplars of the Near-duplicates widget's "
                                              "current result in this viewer.")
        self.labels_file = text_label("Labels file: none")
        self.counts = text_label("No patches open.")
        self.prev_button = PushButton(text="◀ Previous (p)", tooltip="Previous page (key p)")
        self.next_button = PushButton(text="Next (n) ▶", tooltip="Next page (key n)")
        self.page_label = Label(value="")
        self.order = ComboBox(label="Order", choices=ORDERS, value=ORDERS[0])
        self.model = ComboBox(label="Classifier", choices=MODEL_CHOICES, value="rf",
                              tooltip="rf: CEM500K's light model (random forest, 100 trees, depth 8, "
                                      "balanced) on LBP std, geometric-mean median, entropy std, Canny "
                                      "mean. encoder: pooled ResNet50 features + logistic regression; "
                                      "without weights the ResNet50 is RANDOMLY INITIALISED (a weak but "
                                      "honest no-download baseline).")
        self.weights = FileEdit(label="Encoder weights", mode="r", filter="*.pth *.pt *.tar *.pth.tar",
                                tooltip="Optional checkpoint for the encoder classifier (CEM500K MoCoV2, "
                                        "CEM1.5M SwAV, torchvision or smp ResNet50). Empty: random init.")
        self.train_button = PushButton(text="Train classifier")
        self.progress = ProgressRow()
        self.auroc = text_label("Not trained yet.")
        self.uncertain_button = PushButton(text="Label next most uncertain")
        self.threshold = FloatSlider(label="Threshold", value=0.5, min=0.0, max=1.0, step=0.01,
                                     tracking=True, tooltip="Keep patches with P(informative) above this.")
        self.kept = text_label("")
        self.out_dir = FileEdit(label="Export to", mode="d")
        self.export_button = PushButton(text="Export informative patches", enabled=False)
        super().__init__(widgets=[
            self.folder, self.open_button, self.live_button, self.labels_file, self.counts,
            Container(widgets=[self.prev_button, self.page_label, self.next_button], layout="horizontal",
                      labels=False),
            self.order, self.model, self.weights, self.train_button, self.progress, self.auroc,
            self.uncertain_button, self.threshold, self.kept, self.out_dir, self.export_button,
        ])
        scroll_inside(self)
        self.jobs = JobRunner(self.progress, name="Training the classifier", on_running=self._set_running)
        self.open_button.changed.connect(lambda: self.open_folder())
        self.live_button.changed.connect(lambda: self.open_live())
        self.prev_button.changed.connect(lambda: self.show_page(self.page - 1))
        self.next_button.changed.connect(lambda: self.show_page(self.page + 1))
        self.order.changed.connect(lambda _v: self._reorder())
        self.train_button.changed.connect(lambda: self.train())
        self.uncertain_button.changed.connect(lambda: self.show_most_uncertain())
        self.threshold.changed.connect(lambda _v: self._update_kept())
        self.export_button.changed.connect(lambda: self.export())
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._set_enabled()

    # -- opening --------------------------------------------------------------------------
    def open_folder(self, folder=None) -> bool:
        """Open an export folder and its labels.csv (created on the first label)."""
        from ..quality import LabelStore, PatchSet

        if folder is None:
            text = str(self.folder.line_edit.value).strip()
            if text in ("", "."):
                notify_error("Choose an export folder first (it holds manifest.csv and patches/).")
                return False
            folder = text
        try:
            patchset = PatchSet.from_export(folder)
            store = LabelStore(Path(folder) / "labels.csv")
        except (ValueError, OSError) as exc:
            notify_error(str(exc))
            return False
        self._set_source(patchset, store)
        return True

    def open_live(self) -> bool:
        """Label the exemplars of the Near-duplicates widget's current result."""
        from ..cache import cache_dir
        from ..export import source_key
        from ..quality import LabelStore, PatchSet

        live = state_for(self.viewer).curation
        if live is None:
            notify_error("No Near-duplicates result in this viewer: run 'Find near-duplicates' first, "
                         "or open an export folder.")
            return False
        result, volume = live
        out = str(self.out_dir.line_edit.value).strip()
        folder = Path(out) if out not in ("", ".") else cache_dir() / "labels"
        try:
            patchset = PatchSet.from_curation(result, volume)
            store = LabelStore(folder / f"{source_key(result.source)}_labels.csv")
        except (ValueError, OSError) as exc:
            notify_error(str(exc))
            return False
        self._set_source(patchset, store)
        return True

    def _set_source(self, patchset, store) -> None:
        self.patchset = patchset
        self.store = store
        self.p_informative = None
        self.classifier = None
        self._features = {}
        self.labels_file.value = f"Labels file: {store.path}"
        self.auroc.value = "Not trained yet."
        for problem in store.problems:
            notify_info(f"{store.path.name}: {problem}")
        self.order.value = ORDERS[0]
        self._reorder()
        self._update_counts()
        self._update_kept()
        self._set_enabled()

    # -- pages ----------------------------------------------------------------------------
    @property
    def n_pages(self) -> int:
        return max(1, -(-len(self._order) // (GRID * GRID)))

    def _reorder(self) -> None:
        if self.patchset is None:
            return
        n = len(self.patchset)
        how = self.order.value
        if how == "unlabelled first":
            labelled = self._labelled_mask()
            self._order = np.concatenate([np.flatnonzero(~labelled), np.flatnonzero(labelled)])
        elif how == "most uncertain first" and self.p_informative is not None:
            p = self.p_informative
            self._order = np.argsort(np.abs(p - 0.5) + self._labelled_mask() * 1.0, kind="stable")
        else:
            self._order = np.arange(n)
        self.show_page(0)

    def show_most_uncertain(self) -> None:
        """Show the unlabelled patches the classifier is least sure about (active learning)."""
        if self.p_informative is None:
            notify_error("Train the classifier first: the most uncertain patches come from its predictions.")
            return
        if self.order.value != "most uncertain first":
            self.order.value = "most uncertain first"  # reorders and shows page 1
        else:
            self._reorder()

    def _labelled_mask(self) -> np.ndarray:
        if self.patchset is None:
            return np.zeros(0, bool)
        return np.array([pid in self.store for pid in self.patchset.ids], bool)

    def show_page(self, page: int) -> None:
        """Draw page *page* of the current order as the mosaic and its frames."""
        if self.patchset is None:
            return
        page = int(np.clip(page, 0, self.n_pages - 1))
        self.page = page
        per = GRID * GRID
        self._page_indices = self._order[page * per:(page + 1) * per]
        try:
            patches = self.patchset.patches(self._page_indices)
        except ValueError as exc:
            notify_error(str(exc))
            return
        sizes = self.patchset.sizes()
        self._cell = int(min(MAX_CELL, sizes.max())) if len(sizes) else 224
        mosaic = self._compose(patches)
        self._show_layers(mosaic)
        self.page_label.value = f"Page {page + 1} / {self.n_pages}"
        self.prev_button.enabled = page > 0
        self.next_button.enabled = page < self.n_pages - 1

    def _compose(self, patches) -> np.ndarray:
        c, step = self._cell, self._cell + GAP
        mosaic = np.full((GRID * step + GAP, GRID * step + GAP), 32, np.uint8)
        for k, p in enumerate(patches):
            stride = int(np.ceil(max(p.shape) / c))
            if stride > 1:
                p = p[::stride, ::stride]
            r, col = divmod(k, GRID)
            y0, x0 = GAP + r * step, GAP + col * step
            mosaic[y0:y0 + p.shape[0], x0:x0 + p.shape[1]] = p
        return mosaic

    def _cell_rectangles(self) -> list[np.ndarray]:
        c, step = self._cell, self._cell + GAP
        rects = []
        for k in range(len(self._page_indices)):
            r, col = divmod(k, GRID)
            y0, x0 = GAP + r * step - GAP / 2, GAP + col * step - GAP / 2
            rects.append(np.array([[y0, x0], [y0, x0 + c + GAP], [y0 + c + GAP, x0 + c + GAP],
                                   [y0 + c + GAP, x0]], float))
        return rects

    def _show_layers(self, mosaic) -> None:
        from napari.layers import Image, Shapes

        if self._mosaic is None or self._mosaic not in self.viewer.layers:
            self._mosaic = Image(mosaic, name="patch mosaic", colormap="gray", contrast_limits=(0, 255))
            self._bind(self._mosaic)
            self.viewer.add_layer(self._mosaic)
        else:
            self._mosaic.data = mosaic
        if self._frames is None or self._frames not in self.viewer.layers:
            self._frames = Shapes(ndim=2, name="patch labels", opacity=1.0)
            self._bind(self._frames)
            self.viewer.add_layer(self._frames)
        frames = self._frames
        frames.data = []
        rects = self._cell_rectangles()
        if rects:
            frames.add_rectangles(rects, edge_width=GAP * 0.7, edge_color=COLOURS[None],
                                  face_color=(0, 0, 0, 0))
        self.update_frames()
        self.viewer.layers.selection.active = self._mosaic
        self.viewer.reset_view()

    def update_frames(self) -> None:
        """Colour each frame by its label and write P(informative) once trained."""
        frames = self._frames
        if frames is None or self.patchset is None or frames.nshapes != len(self._page_indices):
            return
        ids = [self.patchset.ids[i] for i in self._page_indices]
        labels = [self.store.get(pid) for pid in ids]
        if frames.nshapes:
            frames.edge_color = np.array([COLOURS[lab] for lab in labels], float)
            if self.p_informative is not None:
                text = [f"p={self.p_informative[i]:.2f}" for i in self._page_indices]
            else:
                text = [""] * len(ids)
            frames.features = {"p": text, "label": [lab or "" for lab in labels]}
            # inside the top-left corner of its own cell at any zoom. napari draws text on the
            # screen's side of its anchor ("upper_left" put it over the patch above), so the
            # text hangs from an anchor moved up from the lower-left corner to the top edge
            frames.text = {"string": "{p}", "color": "yellow", "size": 10, "anchor": "lower_left",
                           "translation": [-self._cell, GAP]}
        frames.refresh()

    # -- labelling ------------------------------------------------------------------------
    def _bind(self, layer) -> None:
        layer.mouse_drag_callbacks.append(self._on_click)
        for key, label in (("i", "informative"), ("u", "uninformative"), ("0", None), ("Backspace", None)):
            layer.bind_key(key, self._key_labeller(label), overwrite=True)
        layer.bind_key("n", lambda _layer: self.show_page(self.page + 1), overwrite=True)
        layer.bind_key("p", lambda _layer: self.show_page(self.page - 1), overwrite=True)

    def _key_labeller(self, label):
        def apply(_layer):
            index = self.patch_at(self.viewer.cursor.position)
            if index is not None:
                self.set_label(index, label)
        return apply

    def _on_click(self, layer, event):
        """A click (press and release without moving) cycles the label of the patch under it."""
        if event.type != "mouse_press" or getattr(event, "button", 1) != 1:
            return
        position = tuple(event.position)
        moved = False
        yield
        while event.type == "mouse_move":
            moved = True
            yield
        if not moved:
            self.cycle_at(position)

    def patch_at(self, world_position) -> int | None:
        """Index (in the patch set) of the patch under a world position of the mosaic, or None."""
        if self._mosaic is None or self.patchset is None:
            return None
        row, col = np.asarray(self._mosaic.world_to_data(world_position), float)[-2:]
        step = self._cell + GAP
        r, c = int((row - GAP) // step), int((col - GAP) // step)
        if not (0 <= r < GRID and 0 <= c < GRID):
            return None
        inside = (row - GAP) - r * step < self._cell + GAP / 2 and (col - GAP) - c * step < self._cell + GAP / 2
        k = r * GRID + c
        if not inside or k >= len(self._page_indices):
            return None
        return int(self._page_indices[k])

    def cycle_at(self, world_position) -> str | None:
        index = self.patch_at(world_position)
        if index is None:
            return None
        return self.set_label(index, "cycle")

    def set_label(self, index: int, label) -> str | None:
        """Label patch *index* ('cycle' for the click's cycle); saved at once."""
        pid = self.patchset.ids[int(index)]
        try:
            new = self.store.cycle(pid) if label == "cycle" else self.store.set(pid, label)
        except (ValueError, OSError) as exc:
            notify_error(f"The label could not be saved: {exc}")
            return self.store.get(pid)
        self.update_frames()
        self._update_counts()
        return new

    def _update_counts(self) -> None:
        if self.patchset is None:
            self.counts.value = "No patches open."
            return
        counts = self.store.counts()
        n_lab = int(self._labelled_mask().sum())
        self.counts.value = (f"informative {counts['informative']:,} · uninformative "
                             f"{counts['uninformative']:,} · unlabelled {len(self.patchset) - n_lab:,} "
                             f"(of {len(self.patchset):,})")

    # -- training -------------------------------------------------------------------------
    def _weights_value(self):
        text = str(self.weights.line_edit.value).strip()
        return None if text in ("", ".") else text

    def train(self):
        """Compute features (cached) and fit the chosen classifier in a worker; returns it."""
        from ..quality import check_training_labels, labelled_targets, score_patches

        if self.patchset is None:
            notify_error("Open an export folder (or the Near-duplicates result) first.")
            return None
        _rows, y = labelled_targets(self.patchset, self.store)
        try:
            check_training_labels(y)
        except ValueError as exc:
            notify_error(str(exc))
            return None
        model = self.model.value
        weights = self._weights_value() if model == "encoder" else None
        key = (model, weights)
        return self.jobs.start(score_patches, patchset=self.patchset, labels=self.store.as_dict(),
                               model=model, encoder_weights=weights, features=self._features.get(key),
                               message=f"Computing features of {len(self.patchset):,} patches ...",
                               total=len(self.patchset), on_result=lambda r: self._on_trained(key, r))

    def _on_trained(self, key, scored) -> None:
        self._features[key] = scored.features
        self.classifier = scored.classifier
        self.p_informative = scored.p_informative
        clf = scored.classifier
        auroc = "n/a (fewer than 2 of one class)" if clf.cv_auroc is None else f"{clf.cv_auroc:.3f}"
        encoder = clf.info.get("description")
        self.auroc.value = (f"Cross-validated AUROC {auroc} on {clf.n_informative} informative + "
                            f"{clf.n_uninformative} uninformative labels"
                            + (f"\n{encoder}" if encoder else ""))
        self.progress.finish(f"Trained: {clf.model}.")
        if self.order.value == "most uncertain first":
            self._reorder()
        else:
            self.update_frames()
        self._update_kept()

    def _set_running(self, running: bool) -> None:
        self.train_button.enabled = not running and self.patchset is not None
        self.open_button.enabled = not running
        self.live_button.enabled = not running
        self.export_button.enabled = not running and self.p_informative is not None

    def _set_enabled(self) -> None:
        has = self.patchset is not None
        for w in (self.prev_button, self.next_button, self.train_button, self.uncertain_button):
            w.enabled = has
        self.export_button.enabled = self.p_informative is not None and not self.jobs.running
        if has:
            self.prev_button.enabled = self.page > 0
            self.next_button.enabled = self.page < self.n_pages - 1

    # -- threshold and export -------------------------------------------------------------
    def kept_mask(self) -> np.ndarray | None:
        if self.p_informative is None:
            return None
        return self.p_informative > float(self.threshold.value)

    def _update_kept(self) -> None:
        keep = self.kept_mask()
        if keep is None:
            self.kept.value = "Train the classifier to see kept / dropped counts."
            return
        self.kept.value = (f"kept {int(keep.sum()):,} · dropped {int((~keep).sum()):,} "
                           f"(P(informative) > {float(self.threshold.value):.2f})")

    def export(self, out_dir=None):
        """Write the kept patches (export format + p_informative) in a worker; returns it."""
        from ..quality import write_filtered

        if self.p_informative is None:
            notify_error("Train the classifier first.")
            return None
        if out_dir is None:
            text = str(self.out_dir.line_edit.value).strip()
            if text in ("", "."):
                notify_error("Choose a folder to export to first.")
                return None
            out_dir = text
        problem = output_problem(out_dir, "export folder")
        if problem:
            notify_error(problem)
            return None
        clf = self.classifier
        record = {"model": clf.model, "cv_auroc": clf.cv_auroc, "n_informative_labels": clf.n_informative,
                  "n_uninformative_labels": clf.n_uninformative, "labels": str(self.store.path),
                  "encoder": clf.info.get("description")}
        keep = int(self.kept_mask().sum())
        return self.jobs.start(write_filtered, patchset=self.patchset, p_informative=self.p_informative,
                               threshold=float(self.threshold.value), out_dir=out_dir, record=record,
                               message=f"Exporting {keep:,} informative patches ...", total=keep,
                               on_result=self._on_exported,
                               cancelled="Export cancelled; the folder's manifest is unchanged.")

    def _on_exported(self, summary) -> None:
        message = (f"Exported {summary['n_kept']:,} informative patches (dropped {summary['n_dropped']:,}) "
                   f"to {summary['out_dir']}.")
        self.progress.finish(message)
        notify_info(message)

    def _on_layer_removed(self, event) -> None:
        if event.value is self._mosaic:
            self._mosaic = None
        if event.value is self._frames:
            self._frames = None
