"""The real ``napari-cem`` on unwritable, full and missing outputs: checked before any work,
one plain line (exit 2) for an OSError, and a result that cannot be saved at the end is
rescued into the cache folder (exit 1). Every saved file stays as it was."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cem.model import ModelBundle, build_unet, load_bundle, save_bundle
from napari_cem.synthetic import make_em_volume


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unlucky")
    vol = make_em_volume((3, 96, 96), isotropic=False, seed=3)
    tifffile.imwrite(folder / "image.tif", vol.image, photometric="minisblack")
    painted = np.zeros_like(vol.labels, dtype=np.uint8)
    painted[1] = (vol.labels[1] == 2).astype(np.uint8) + 1
    tifffile.imwrite(folder / "labels.tif", painted, photometric="minisblack")
    model = save_bundle(ModelBundle(model=build_unet(1).eval(), classes=["background", "mito"],
                                    norms=(0.5, 0.2), crop_size=64), folder / "mito.pt")
    return folder, model


FINETUNE = ["--iterations", "1", "--crop", "64", "--batch", "1", "--device", "cpu"]


def _one_line_error(code, err, expected_code=2):
    assert code == expected_code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert errors, err
    return errors[0]


@pytest.mark.parametrize("where", ["readonly", "missing-under-readonly", "under-a-file"])
def test_finetune_refuses_an_unwritable_output_before_training(data, tmp_path, readonly_dir, napari_cem,
                                                                where):
    folder, _ = data
    (tmp_path / "a-file").write_text("x")
    out = {"readonly": readonly_dir / "model.pt",
           "missing-under-readonly": readonly_dir / "new" / "model.pt",
           "under-a-file": tmp_path / "a-file" / "model.pt"}[where]
    code, out_text, err = napari_cem("finetune", folder / "image.tif", folder / "labels.tif", "-o", out,
                                     *FINETUNE)
    line = _one_line_error(code, err)
    assert "cannot write" in line and "Nothing was done" in line
    assert "trained" not in out_text  # refused before any training
    assert not out.exists()


def test_finetune_that_cannot_save_at_the_end_rescues_the_model(data, tmp_path, small_disk, napari_cem):
    folder, _ = data
    disk = small_disk("256k")  # the probe fits, a ~100 MB bundle does not
    cache = tmp_path / "cache"
    code, out_text, err = napari_cem("finetune", folder / "image.tif", folder / "labels.tif",
                                     "-o", disk / "model.pt", *FINETUNE, env={"NAPARI_CEM_CACHE": str(cache)})
    line = _one_line_error(code, err, expected_code=1)
    assert "No space left on device" in line and "saved to" in line
    rescued = list((cache / "rescued").glob("model-*.pt"))
    assert len(rescued) == 1 and str(rescued[0]) in line
    assert len(load_bundle(rescued[0]).classes) == 2
    assert not (disk / "model.pt").exists() and list(disk.iterdir()) == []  # no temp file left


def test_segment_refuses_an_unwritable_tiff_before_segmenting(data, readonly_dir, napari_cem):
    folder, model = data
    code, out_text, err = napari_cem("segment", model, folder / "image.tif", "-o", readonly_dir / "seg.tif",
                                     "--device", "cpu")
    assert "cannot write" in _one_line_error(code, err)
    assert "voxels segmented" not in out_text


def test_segment_that_cannot_save_its_tiffs_rescues_them(data, tmp_path, small_disk, napari_cem):
    folder, model = data
    disk = small_disk("4k")  # one page: the confidences (~10 KB compressed) do not fit
    big = tmp_path / "noisy.tif"
    tifffile.imwrite(big, np.random.default_rng(0).integers(0, 255, (6, 192, 192), dtype=np.uint8),
                     photometric="minisblack")
    code, out_text, err = napari_cem("segment", model, big, "-o", disk / "seg.tif", "--device", "cpu",
                                     "--probabilities", env={"NAPARI_CEM_CACHE": str(tmp_path / "cache")})
    line = _one_line_error(code, err, expected_code=1)
    assert "No space left on device" in line and "saved to" in line
    rescued = sorted((tmp_path / "cache" / "rescued").glob("seg*.tif"))
    assert rescued and all(tifffile.imread(r).shape[-3:] == (6, 192, 192) for r in rescued)
    assert all(str(r) in err + out_text for r in rescued) and not list(disk.glob(".*"))


@pytest.mark.parametrize("command", ["curate", "filter", "pretrain"])
def test_folder_outputs_are_checked_before_any_work(data, tmp_path, readonly_dir, napari_cem, command):
    from _quality_helpers import make_labelled_export

    from napari_cem.quality import LabelStore

    folder, _ = data
    export = tmp_path / "export"
    ids, y = make_labelled_export(export, 12, 8)
    LabelStore(export).set_many({pid: ("informative" if k else "uninformative") for pid, k in zip(ids, y)})
    args = {"curate": [folder / "image.tif"], "filter": [export], "pretrain": [export / "patches"]}[command]
    code, _out, err = napari_cem(command, *args, "-o", readonly_dir / "out")
    assert "cannot write" in _one_line_error(code, err)


def test_curate_hitting_a_read_only_patches_folder_is_one_line_and_leaves_no_manifest(
        data, tmp_path, readonly, napari_cem):
    folder, _ = data
    out = tmp_path / "out"
    (out / "patches").mkdir(parents=True)
    readonly(out / "patches")  # OUT passes the check, writing the first patch fails
    code, _out, err = napari_cem("curate", folder / "image.tif", "-o", out, "--patch-size", "32")
    line = _one_line_error(code, err)
    assert "patches" in line and ("Operation not permitted" in line or "Permission denied" in line)
    assert not (out / "manifest.csv").exists()


def test_pretrain_on_a_full_disk_is_one_line(tmp_path, small_disk, napari_cem):
    patches = tmp_path / "patches"
    patches.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        tifffile.imwrite(patches / f"p{i}.tif", rng.integers(0, 255, (224, 224), dtype=np.uint8))
    disk = small_disk("64k")  # the decoded patch cache (40 x 224 x 224 bytes) does not fit
    code, _out, err = napari_cem("pretrain", patches, "-o", disk / "moco", "--epochs", "1", "--batch", "8",
                                 "--queue", "16", "--device", "cpu")
    assert "No space left on device" in _one_line_error(code, err)


def test_curate_rerun_removes_patch_files_a_killed_run_left(data, tmp_path, napari_cem):
    """A run killed while writing patches leaves files no manifest lists; the rerun removes them."""
    from napari_cem.export import patch_filename, read_manifest

    folder, _ = data
    out = tmp_path / "out"
    (out / "patches").mkdir(parents=True)
    orphan = out / "patches" / patch_filename("image", "xy", 0, 0, 999, 32, 32)
    tifffile.imwrite(orphan, np.zeros((32, 32), np.uint8))
    other = out / "patches" / patch_filename("image_b", "xy", 0, 0, 0, 32, 32)  # another source's file
    tifffile.imwrite(other, np.zeros((32, 32), np.uint8))
    code, _out, err = napari_cem("curate", folder / "image.tif", "-o", out, "--patch-size", "32")
    assert code == 0, err
    assert not orphan.exists() and other.exists()
    listed = {patch_filename(r["source"], r["plane"], r["slice"], r["y"], r["x"], r["height"], r["width"])
              for r in read_manifest(out) if r["exemplar"]}
    assert {p.name for p in (out / "patches").iterdir()} - {other.name} == listed


class _Evil:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("command", ["finetune --weights", "segment MODEL", "pretrain --resume"])
def test_a_checkpoint_holding_code_is_refused_in_our_words(data, tmp_path, napari_cem, command):
    import torch

    folder, _ = data
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Evil()}, evil)
    patches = tmp_path / "patches"
    patches.mkdir()
    for i in range(4):
        tifffile.imwrite(patches / f"p{i}.tif", np.zeros((64, 64), np.uint8))
    out = tmp_path / "moco"
    out.mkdir()
    (out / "checkpoint.pth.tar").write_bytes(evil.read_bytes())
    args = {"finetune --weights": ["finetune", folder / "image.tif", folder / "labels.tif", "-o",
                                   tmp_path / "m.pt", *FINETUNE, "--weights", evil],
            "segment MODEL": ["segment", evil, folder / "image.tif", "-o", tmp_path / "s.tif"],
            "pretrain --resume": ["pretrain", patches, "-o", out, "--resume", "--batch", "2",
                                  "--queue", "4", "--device", "cpu"]}[command]
    code, _out, err = napari_cem(*args, cwd=tmp_path)
    line = _one_line_error(code, err)
    assert "not a weights file napari-cem can load safely" in line and "system" in line
    assert "weights_only" not in err and not (tmp_path / "PWNED").exists()


def test_filter_hitting_a_read_only_patches_folder_is_one_line_and_writes_no_manifest(
        tmp_path, readonly, napari_cem):
    from _quality_helpers import make_labelled_export

    from napari_cem.quality import LabelStore

    export, out = tmp_path / "export", tmp_path / "out"
    ids, y = make_labelled_export(export, 12, 8)
    LabelStore(export).set_many({pid: ("informative" if k else "uninformative") for pid, k in zip(ids, y)})
    (out / "patches").mkdir(parents=True)
    readonly(out / "patches")
    code, _out, err = napari_cem("filter", export, "-o", out)
    assert "patches" in _one_line_error(code, err)
    assert not (out / "manifest.csv").exists() and not (out / "filter.json").exists()


def test_curate_messages_are_whole_lines_in_a_log(data, tmp_path, napari_cem):
    """stderr to a file or pipe (batch jobs): no progress-bar fragments around the messages."""
    folder, _ = data
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 not really a tiff")
    code, out, err = napari_cem("curate", folder / "image.tif", broken, "-o", tmp_path / "out",
                                "--patch-size", "32")
    assert code == 1
    assert "\r" not in err
    lines = err.splitlines()
    assert any(line.startswith("napari-cem curate: error: broken: ") for line in lines)
    assert any(line.startswith("image: ") and "exemplars written" in line for line in lines)
