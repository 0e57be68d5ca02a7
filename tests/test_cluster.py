"""Segmentation on a dask.distributed cluster (2 local worker processes, CPU): the labels of
the one-process run, also when a worker is killed mid-run, and a resumed store."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import zarr

from napari_cem.cluster import segment_on_cluster, start_local_cluster
from napari_cem.infer import segment
from napari_cem.model import load_bundle


@pytest.fixture(scope="module")
def volume():
    from napari_cem.synthetic import make_em_volume

    return make_em_volume((8, 64, 72), isotropic=True, seed=4).image


@pytest.fixture(scope="module")
def client():
    c = start_local_cluster(2)
    yield c
    c.cluster.close()
    c.close()


@pytest.fixture(scope="module")
def one_process(unet_file, volume, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "seg.zarr"
    result = segment(volume, load_bundle(unet_file), out=out, slab=1, device="cpu",
                     keep_probabilities=True)
    return np.asarray(result.labels), np.asarray(result.probabilities)


def test_two_workers_give_the_one_process_labels(unet_file, volume, client, one_process, tmp_path):
    result = segment_on_cluster(volume, unet_file, tmp_path / "seg.zarr", client, slab=1, device="cpu",
                                keep_probabilities=True)
    labels, probs = one_process
    np.testing.assert_array_equal(np.asarray(result.labels), labels)
    np.testing.assert_array_equal(np.asarray(result.probabilities), probs)
    assert result.metadata["workers"] == 2 and result.metadata["complete"] is True
    assert sorted(zarr.open_group(str(tmp_path / "seg.zarr")).attrs["napari_cem"]["done"]["xy"]) == list(range(8))


def test_a_worker_killed_mid_run_changes_nothing(unet_file, volume, client, one_process, tmp_path):
    pids = list(client.run(os.getpid).values())
    killed = []

    def progress(done, total, stage):
        if done >= 2 and not killed:  # the client's own slab is in; the workers are busy
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    result = segment_on_cluster(volume, unet_file, tmp_path / "seg.zarr", client, slab=1, device="cpu",
                                keep_probabilities=True, progress=progress)
    assert killed
    np.testing.assert_array_equal(np.asarray(result.labels), one_process[0])
    client.wait_for_workers(2, timeout=120)  # the nanny restarted it


def test_a_finished_store_is_resumed_not_redone(unet_file, volume, client, one_process, tmp_path):
    out = tmp_path / "seg.zarr"
    segment(volume[:4], load_bundle(unet_file), out=out, slab=1, device="cpu")  # another volume
    with pytest.raises(ValueError, match="another model, volume"):
        segment_on_cluster(volume, unet_file, out, client, slab=1, device="cpu")
    out2 = tmp_path / "seg2.zarr"
    segment_on_cluster(volume, unet_file, out2, client, slab=1, device="cpu")
    seen = []

    def no_work(*_args, **_kwargs):
        raise AssertionError("a finished slab was given out again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(client, "submit", no_work)
        again = segment_on_cluster(volume, unet_file, out2, client, slab=1, device="cpu",
                                   progress=lambda d, t, s: seen.append(d))
    assert seen == list(range(1, 9))  # every slab already done: counted, not predicted
    np.testing.assert_array_equal(np.asarray(again.labels), one_process[0])


def test_segment_command_with_workers_writes_the_same_labels(unet_file, volume, one_process, tmp_path, capsys):
    import tifffile

    from napari_cem.cli import main

    tif = tmp_path / "cells.tif"
    tifffile.imwrite(tif, volume, photometric="minisblack")
    out = tmp_path / "seg.zarr"
    assert main(["segment", str(unet_file), str(tif), "-o", str(out), "--zarr", "--workers", "2",
                 "--device", "cpu"]) == 0
    assert "2 dask workers" in capsys.readouterr().out
    labels = np.asarray(zarr.open_group(str(out))["labels"])
    one = segment(volume, load_bundle(unet_file), device="cpu")  # default slabs: the same labels
    np.testing.assert_array_equal(labels, np.asarray(one.labels))
    assert main(["segment", str(unet_file), str(tif), "-o", str(tmp_path / "x.tif"), "--workers", "2"]) == 2
    assert "add --zarr" in capsys.readouterr().err


def test_instances_labelled_on_the_workers_have_the_same_ids(client, tmp_path):
    from napari_cem.instances_slabs import find_instances_in_slabs

    rng = np.random.default_rng(1)
    semantic = (rng.random((24, 40, 40)) > 0.7).astype(np.uint8)  # objects across every slab border
    here = find_instances_in_slabs(semantic, tmp_path / "here.zarr", slab=5)
    there = find_instances_in_slabs(semantic, tmp_path / "there.zarr", slab=5, client=client)
    assert there.count == here.count > 10
    np.testing.assert_array_equal(np.asarray(there.labels[...]), np.asarray(here.labels[...]))
    np.testing.assert_array_equal(there.object_class, here.object_class)


def test_instances_command_with_workers(tmp_path, capsys):
    import tifffile

    from napari_cem.cli import main

    semantic = np.zeros((12, 30, 30), np.uint8)
    semantic[1:11, 5:10, 5:10] = 1
    semantic[3:5, 20:25, 20:25] = 1
    tifffile.imwrite(tmp_path / "seg.tif", semantic, photometric="minisblack")
    assert main(["instances", str(tmp_path / "seg.tif"), "-o", str(tmp_path / "obj.zarr"), "--slab", "3",
                 "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 dask workers" in out and "2 objects" in out
    assert main(["instances", str(tmp_path / "seg.tif"), "-o", str(tmp_path / "obj.tif"), "--workers", "2"]) == 2
    assert "write OUT.zarr" in capsys.readouterr().err


def test_one_worker_per_device(unet_file, volume, one_process, tmp_path, capsys):
    import tifffile

    from napari_cem.cli import main
    from napari_cem.cluster import parse_devices

    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    for bad, words in (("cuda:0,cuda:0", "listed twice"), ("gpu0", "Unknown device"), ("cpu,cuda:0", "not both")):
        with pytest.raises(ValueError, match=words):
            parse_devices(bad)
    tif = tmp_path / "cells.tif"
    tifffile.imwrite(tif, volume, photometric="minisblack")
    out = tmp_path / "seg.zarr"
    assert main(["segment", str(unet_file), str(tif), "-o", str(out), "--zarr", "--devices", "cpu,cpu"]) == 0
    assert "2 dask workers" in capsys.readouterr().out
    one = segment(volume, load_bundle(unet_file), device="cpu")
    np.testing.assert_array_equal(np.asarray(zarr.open_group(str(out))["labels"]), np.asarray(one.labels))
    assert main(["segment", str(unet_file), str(tif), "-o", str(out), "--zarr", "--devices", "cuda:0,cuda:0"]) == 2
    assert "listed twice" in capsys.readouterr().err
