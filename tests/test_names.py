"""Names built from a manifest, a labels file or a source name never leave their folder."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from _quality_helpers import make_labelled_export

from napari_cem._names import check_name, check_patch_id, path_under
from napari_cem.export import patch_filename
from napari_cem.quality import LabelStore, PatchSet


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "/etc/passwd", "a\\b", "a\0b", "C:x", " x"])
def test_check_name_refuses_anything_but_one_component(bad):
    with pytest.raises(ValueError):
        check_name(bad)


def test_path_under_refuses_a_symlink_out(tmp_path):
    (tmp_path / "inside").mkdir()
    (tmp_path / "secret.tif").write_bytes(b"x")
    (tmp_path / "inside" / "link.tif").symlink_to(tmp_path / "secret.tif")
    assert path_under(tmp_path / "inside", "ok.tif") == tmp_path / "inside" / "ok.tif"
    with pytest.raises(ValueError, match="leads outside"):
        path_under(tmp_path / "inside", "link.tif")


@pytest.mark.parametrize("field, value", [
    ("plane", "x/../../../../ESCAPED"), ("plane", "xy/.."), ("plane", "zz"),
    ("slice", "1/../2"), ("y", "-3"), ("height", "0"),
])
def test_patch_filename_refuses_fields_no_export_writes(field, value):
    args = {"source": "vol", "plane": "xy", "slice_index": 1, "y": 0, "x": 0, "height": 8, "width": 8}
    args["slice_index" if field == "slice" else field] = value
    with pytest.raises(ValueError):
        patch_filename(**args)


def test_source_names_are_made_safe():
    name = patch_filename("../../etc/evil source", "xy", 0, 0, 0, 8, 8)
    assert "/" not in name and check_name(name) == name and not name.startswith(".")


def _tamper(export, line: int, field: str, value: str):
    path = export / "manifest.csv"
    rows = list(csv.reader(path.open()))
    rows[line - 1][rows[0].index(field)] = value
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def test_a_crafted_manifest_row_is_refused_with_its_line(tmp_path):
    export = tmp_path / "export"
    make_labelled_export(export, 6, 6)
    _tamper(export, 4, "plane", "x/../../../../ESCAPED")
    with pytest.raises(ValueError, match=r"manifest.csv, line 4: plane 'x/\.\./"):
        PatchSet.from_export(export)


def test_labels_file_ids_that_are_paths_are_ignored_and_reported(tmp_path):
    (tmp_path / "labels.csv").write_text("patch_id,label,who,when\n../../etc/x,informative,a,t\n"
                                         "vol_xy_00001_y00000_x00000_8x8,uninformative,a,t\n")
    store = LabelStore(tmp_path)
    assert store.as_dict() == {"vol_xy_00001_y00000_x00000_8x8": "uninformative"}
    assert "line 2" in store.problems[0] and "patch id" in store.problems[0]
    with pytest.raises(ValueError, match="must be a plain name"):
        store.set("../x", "informative")
    assert check_patch_id("vol_xy_00001_y00000_x00000_8x8")


def test_filter_cli_reads_and_writes_nothing_outside(tmp_path, napari_cem):
    """The reported attack: a plane field that climbs out of the export and of OUT."""
    import tifffile

    export, out = tmp_path / "a" / "b" / "export", tmp_path / "a" / "b" / "out"
    ids, y = make_labelled_export(export, 12, 8, seed=1)
    LabelStore(export).set_many({pid: ("informative" if k else "uninformative") for pid, k in zip(ids, y)})
    # a readable TIFF outside the export that the crafted row points at, and OUT's layout
    tifffile.imwrite(tmp_path / "ESCAPED_00003_y00000_x00000_64x64.tif", np.zeros((64, 64), np.uint8))
    (out / "patches" / "vol_x").mkdir(parents=True)
    _tamper(export, 5, "plane", "x/../../../../ESCAPED")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, stdout, stderr = napari_cem("filter", export, "-o", out)
    assert code == 2, stderr
    assert "Traceback" not in stderr and "line 5" in stderr and "ESCAPED" in stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
