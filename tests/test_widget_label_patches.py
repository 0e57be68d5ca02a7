"""The "Label patches" dock widget in a real viewer: mosaic, click/key labelling saved at once,
training with AUROC, most-uncertain page, threshold counts, export, live source, bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from _quality_helpers import make_labelled_export

from napari_cem._widgets.label_patches import GAP, GRID, LabelPatchesWidget
from napari_cem.export import read_manifest
from napari_cem.quality import LabelStore


def _wait_idle(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


@pytest.fixture()
def export(tmp_path):
    ids, y = make_labelled_export(tmp_path / "export", 52, 18, seed=3)  # 70 patches: 2 pages
    return tmp_path / "export", ids, y


@pytest.fixture()
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    w = LabelPatchesWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


def _centre(widget, k):
    """World position of the centre of cell k of the page."""
    step = widget._cell + GAP
    r, c = divmod(k, GRID)
    return (GAP + r * step + widget._cell / 2, GAP + c * step + widget._cell / 2)


def _click(widget, layer, position, drag=False):
    event = SimpleNamespace(type="mouse_press", position=position, button=1)
    gen = widget._on_click(layer, event)
    next(gen)
    if drag:
        event.type = "mouse_move"
        next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)


def test_mosaic_click_cycles_and_saves_at_once(widget, export):
    folder, ids, _y = export
    assert widget.open_folder(folder)
    viewer = widget.viewer
    mosaic, frames = viewer.layers["patch mosaic"], viewer.layers["patch labels"]
    assert mosaic.data.shape == (GRID * (64 + GAP) + GAP,) * 2
    assert frames.nshapes == GRID * GRID and widget.page_label.value == "Page 1 / 2"
    assert "unlabelled 70" in widget.counts.value
    first = widget._page_indices[0]
    # the patch pixels sit in their cell
    np.testing.assert_array_equal(mosaic.data[GAP:GAP + 64, GAP:GAP + 64], widget.patchset.patch(first))
    _click(widget, mosaic, _centre(widget, 0))
    assert LabelStore(folder).get(ids[first]) == "informative"  # on disk already
    assert "informative 1 ·" in widget.counts.value
    np.testing.assert_allclose(frames.edge_color[0], (0.15, 0.9, 0.25, 1.0))
    _click(widget, mosaic, _centre(widget, 0))
    assert LabelStore(folder).get(ids[first]) == "uninformative"
    np.testing.assert_allclose(frames.edge_color[0], (1.0, 0.2, 0.2, 1.0))
    _click(widget, mosaic, _centre(widget, 0), drag=True)  # a pan, not a click
    assert LabelStore(folder).get(ids[first]) == "uninformative"
    _click(widget, mosaic, _centre(widget, 0))
    assert LabelStore(folder).get(ids[first]) is None
    _click(widget, mosaic, (1.0, 1.0))  # the gap around the grid: nothing
    assert len(LabelStore(folder)) == 0
    # keys i / u / 0 on the patch under the cursor, n / p for pages
    viewer.cursor.position = _centre(widget, 5)
    keys = {str(k): f for k, f in mosaic.keymap.items()}
    keys["I"](mosaic)
    assert LabelStore(folder).get(ids[widget._page_indices[5]]) == "informative"
    keys["U"](mosaic)
    assert LabelStore(folder).get(ids[widget._page_indices[5]]) == "uninformative"
    keys["0"](mosaic)
    assert LabelStore(folder).get(ids[widget._page_indices[5]]) is None
    keys["N"](mosaic)
    assert widget.page == 1 and frames.nshapes == 70 - 64 and not widget.next_button.enabled
    keys["P"](mosaic)
    assert widget.page == 0
    # reopening the folder restores the labels
    widget.set_label(widget._page_indices[3], "informative")
    assert widget.open_folder(folder)
    assert "informative 1 ·" in widget.counts.value


def test_train_shows_auroc_uncertain_threshold_and_exports(widget, export, qtbot, tmp_path):
    folder, ids, y = export
    LabelStore(folder).set_many({pid: ("informative" if k else "uninformative")
                                 for pid, k in list(zip(ids, y))[:30]})
    widget.open_folder(folder)
    assert "informative" in widget.counts.value and "unlabelled 40" in widget.counts.value
    assert not widget.export_button.enabled
    widget.model.value = "rf"
    widget.train()
    _wait_idle(qtbot, widget)
    assert widget.p_informative is not None
    assert widget.auroc.value.startswith("Cross-validated AUROC")
    assert float(widget.auroc.value.split()[2]) > 0.9
    text = widget._frames.features["p"]
    assert all(t.startswith("p=") for t in text)
    # threshold: live counts
    widget.threshold.value = 0.5
    keep = widget.p_informative > 0.5
    assert widget.kept.value.startswith(f"kept {keep.sum()} · dropped {(~keep).sum()}")
    widget.threshold.value = 0.99
    assert widget.kept.value.startswith(f"kept {(widget.p_informative > 0.99).sum()} ·")
    widget.threshold.value = 0.5
    # most uncertain: unlabelled patches first, nearest 0.5 first
    widget.show_most_uncertain()
    page = widget._page_indices
    labelled = widget._labelled_mask()
    assert not labelled[page[:40]].any()
    d = np.abs(widget.p_informative[page[:40]] - 0.5)
    assert np.all(np.diff(d) >= 0)
    # export
    assert widget.export_button.enabled
    widget.export(tmp_path / "kept")
    _wait_idle(qtbot, widget)
    rows = read_manifest(tmp_path / "kept")
    assert len(rows) == int(keep.sum()) and "p_informative" in rows[0]
    assert "Exported" in widget.progress.status.value


def test_bad_input_gives_messages_and_trains_nothing(widget, export, tmp_path, monkeypatch):
    folder, ids, _y = export
    messages = []
    monkeypatch.setattr("napari_cem._widgets.label_patches.notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    assert not widget.open_folder(tmp_path)  # no manifest.csv
    assert "no manifest.csv" in messages[-1]
    assert widget.train() is None and "Open an export folder" in messages[-1]
    widget.open_folder(folder)
    LabelStore(folder).set_many({pid: "informative" for pid in ids[:12]})
    widget.open_folder(folder)
    assert widget.train() is None
    assert "label some uninformative" in messages[-1] and widget.p_informative is None
    widget.show_most_uncertain()
    assert "Train the classifier first" in messages[-1]
    assert not widget.open_live() and "No Near-duplicates result" in messages[-1]


def test_live_near_duplicates_result(widget, tmp_path):
    from napari_cem._widgets._state import state_for
    from napari_cem.curate import find_near_duplicates
    from napari_cem.synthetic import make_em_volume

    volume = np.asarray(make_em_volume((4, 128, 128), isotropic=False, seed=1).image)
    result = find_near_duplicates(volume, source="em", patch_size=64, planes="xy")
    state_for(widget.viewer).curation = (result, volume)
    widget.out_dir.value = tmp_path
    assert widget.open_live()
    assert len(widget.patchset) == result.n_kept
    assert widget.store.path == tmp_path / "em_labels.csv"
    _click(widget, widget._mosaic, _centre(widget, 0))
    assert LabelStore(tmp_path / "em_labels.csv").get(widget.patchset.ids[widget._page_indices[0]]) == "informative"


def test_export_to_an_unwritable_folder_is_refused(widget, export, qtbot, readonly_dir, monkeypatch):
    folder, ids, y = export
    messages = []
    monkeypatch.setattr("napari_cem._widgets.label_patches.notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    LabelStore(folder).set_many({pid: ("informative" if k else "uninformative")
                                 for pid, k in list(zip(ids, y))[:30]})
    widget.open_folder(folder)
    widget.train()
    _wait_idle(qtbot, widget)
    assert widget.export(readonly_dir) is None
    assert "cannot write to the export folder" in messages[-1] and widget._worker is None
