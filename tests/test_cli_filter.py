"""``napari-cem filter EXPORT_DIR --labels labels.csv [--model] [--threshold] -o OUT``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _quality_helpers import make_labelled_export, write_export

from napari_cem.cli import main
from napari_cem.export import read_manifest
from napari_cem.quality import FILTER_COLUMNS, LabelStore, PatchSet


@pytest.fixture()
def labelled(tmp_path):
    export = tmp_path / "export"
    ids, y = make_labelled_export(export, 20, 10, seed=2)
    store = LabelStore(export)
    store.set_many({pid: ("informative" if k else "uninformative") for pid, k in zip(ids[:20], y[:20])})
    return export, ids, y


def test_filter_end_to_end(labelled, tmp_path, capsys):
    export, ids, y = labelled
    out = tmp_path / "kept"
    assert main(["filter", str(export), "-o", str(out)]) == 0  # labels.csv beside the export
    text = capsys.readouterr().out
    assert "cross-validated AUROC" in text and "kept" in text
    header = (out / "manifest.csv").read_text().splitlines()[0]
    assert header == ",".join(FILTER_COLUMNS)
    rows = read_manifest(out)
    kept_ids = {f"{r['source']}_xy_{r['slice']:05d}" for r in rows}
    expected = {ids[i].split("_y")[0] for i in np.flatnonzero(y == 1)}
    assert kept_ids == expected  # exactly the textured patches
    assert all(float(r["p_informative"]) > 0.5 for r in rows)
    assert len(list((out / "patches").glob("*.tif"))) == len(rows)
    info = json.loads((out / "filter.json").read_text())
    assert info["model"] == "rf" and info["n_kept"] == len(rows) and info["n_patches"] == 30
    # the filtered folder is an export like any other: it opens as a patch set
    assert len(PatchSet.from_export(out)) == len(rows)
    # a stricter threshold run into the same folder drops files no longer kept
    assert main(["filter", str(export), "--labels", str(export / "labels.csv"), "--threshold", "1.0",
                 "-o", str(out)]) == 0
    assert read_manifest(out) == [] and not list((out / "patches").glob("*.tif"))


@pytest.mark.slow
def test_filter_with_the_encoder(labelled, tmp_path, capsys):
    export, _ids, y = labelled
    out = tmp_path / "kept"
    assert main(["filter", str(export), "--model", "encoder", "--device", "cpu", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "randomly initialised resnet50" in text
    assert len(read_manifest(out)) == int(y.sum())


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_filter_bad_input(labelled, tmp_path, capsys):
    export, ids, _y = labelled
    out = str(tmp_path / "o")
    assert main(["filter", str(tmp_path / "nope"), "-o", out]) == 2
    assert "export folder not found" in _err(capsys)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "labels.csv").write_text("patch_id,label,who,when\n")
    assert main(["filter", str(bare), "-o", out]) == 2
    assert "no manifest.csv" in _err(capsys)
    assert main(["filter", str(export), "--threshold", "1.5", "-o", out]) == 2
    assert "--threshold" in _err(capsys)
    one_class = tmp_path / "one.csv"
    LabelStore(one_class).set_many({pid: "informative" for pid in ids[:12]})
    assert main(["filter", str(export), "--labels", str(one_class), "-o", out]) == 2
    msg = _err(capsys)
    assert "are informative: label some uninformative" in msg and "Traceback" not in msg
    few = tmp_path / "few.csv"
    LabelStore(few).set_many({ids[0]: "informative", ids[1]: "uninformative"})
    assert main(["filter", str(export), "--labels", str(few), "-o", out]) == 2
    assert "at least 10 patches" in _err(capsys)
    other = tmp_path / "other.csv"
    LabelStore(other).set_many({f"x{i}": "informative" for i in range(12)})
    assert main(["filter", str(export), "--labels", str(other), "-o", out]) == 2
    assert "names a patch" in _err(capsys)
    assert main(["filter", str(export), "-o", str(export)]) == 2
    assert "new folder" in _err(capsys)
    assert not (tmp_path / "o").exists()


def test_filter_refuses_mismatched_patch_files(tmp_path, capsys):
    import tifffile

    export = tmp_path / "e"
    ids = write_export(export, [np.full((32, 32), i * 10, np.uint8) for i in range(12)])
    tifffile.imwrite(export / "patches" / f"{ids[3]}.tif", np.zeros((16, 32), np.uint8))
    LabelStore(export).set_many({pid: ("informative" if i % 2 else "uninformative") for i, pid in enumerate(ids)})
    assert main(["filter", str(export), "-o", str(tmp_path / "o")]) == 2
    assert "manifest says uint8 32 x 32" in _err(capsys)
