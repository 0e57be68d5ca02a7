"""MoCoV2 pre-training: momentum rule, queue, checkpoint layout, exact resume, 2 ranks, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

torch = pytest.importorskip("torch")

from napari_cem._cancel import Cancelled  # noqa: E402
from napari_cem.pretrain import (  # noqa: E402
    CHECKPOINT_NAME,
    PatchFolder,
    PretrainConfig,
    _enqueue,
    _momentum_update,
    augment_views,
    build_moco,
    load_pretrain_checkpoint,
    pretrain,
)

SMALL = dict(arch="resnet18", crop=32, batch_size=8, queue_size=16, dim=16)


def _patches(folder: Path, n: int = 16, size: int = 40, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = (rng.random((size, size)) * 255).astype(np.uint8)
        tifffile.imwrite(folder / f"p{i:03d}.tif", img)
    return folder


def _state(path: Path) -> dict:
    return load_pretrain_checkpoint(path)["state_dict"]


def test_momentum_update_and_queue():
    moco = build_moco(PretrainConfig(**SMALL))
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(1.0)
    k_before = [p.clone() for p in moco.encoder_k.parameters()]
    _momentum_update(moco, 0.9)
    for pk, k0, pq in zip(moco.encoder_k.parameters(), k_before, moco.encoder_q.parameters()):
        torch.testing.assert_close(pk, 0.9 * k0 + 0.1 * pq)
    # the queue is a ring buffer of columns
    keys = torch.arange(8 * 16, dtype=torch.float32).view(8, 16)
    _enqueue(moco, keys)
    assert int(moco.queue_ptr) == 8
    torch.testing.assert_close(moco.queue[:, :8], keys.T)
    _enqueue(moco, keys + 1)
    assert int(moco.queue_ptr) == 0
    torch.testing.assert_close(moco.queue[:, 8:], keys.T + 1)


def test_training_changes_query_encoder_and_moves_key_encoder(tmp_path):
    data = _patches(tmp_path / "p")
    config = PretrainConfig(epochs=1, **SMALL)
    torch.manual_seed(config.seed)
    init = build_moco(config).state_dict()
    logs = list(pretrain(data, tmp_path / "out", config, device="cpu"))
    assert len(logs) == 1 and logs[0].iteration == 2 and np.isfinite(logs[0].loss)
    state = {k.removeprefix("module."): v for k, v in _state(tmp_path / "out" / CHECKPOINT_NAME).items()}
    w = "conv1.weight"
    assert not torch.equal(state[f"encoder_q.{w}"], init[f"encoder_q.{w}"])  # SGD moved it
    # key encoder: after step 1 it equals q0 (k0 == q0); step 2 moves it by 0.001 towards q1
    assert not torch.equal(state[f"encoder_k.{w}"], init[f"encoder_k.{w}"])
    diff_k = (state[f"encoder_k.{w}"] - init[f"encoder_k.{w}"]).abs().max()
    diff_q = (state[f"encoder_q.{w}"] - init[f"encoder_q.{w}"]).abs().max()
    assert diff_k < 0.01 * diff_q
    assert int(state["queue_ptr"]) == 16 % config.queue_size
    assert (tmp_path / "out" / "log.csv").read_text().startswith("epoch,iteration,loss")


def test_bf16_autocast_on_cpu_trains_float32_weights(tmp_path):
    data = _patches(tmp_path / "p")
    config = PretrainConfig(epochs=1, amp="on", **SMALL)
    torch.manual_seed(config.seed)
    init = build_moco(config).state_dict()
    logs = list(pretrain(data, tmp_path / "out", config, device="cpu"))
    assert np.isfinite(logs[0].loss) and 0.0 <= logs[0].accuracy <= 1.0
    state = {k.removeprefix("module."): v for k, v in _state(tmp_path / "out" / CHECKPOINT_NAME).items()}
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    assert not torch.equal(state["encoder_q.conv1.weight"], init["encoder_q.conv1.weight"])
    assert load_pretrain_checkpoint(tmp_path / "out" / CHECKPOINT_NAME)["config"]["amp"] == "on"
    with pytest.raises(ValueError, match="amp"):
        next(pretrain(data, tmp_path / "bad", PretrainConfig(epochs=1, amp="bf17", **SMALL),
                      device="cpu"))


@pytest.mark.slow
def test_checkpoint_has_the_released_cem500k_layout(tmp_path):
    config = PretrainConfig(epochs=1, arch="resnet50", crop=32, batch_size=8, queue_size=16)
    ckpt_dir = tmp_path / "out"
    list(pretrain(_patches(tmp_path / "p", n=8), ckpt_dir, config, device="cpu"))
    ckpt = load_pretrain_checkpoint(ckpt_dir / CHECKPOINT_NAME)
    assert {"epoch", "arch", "state_dict", "optimizer", "norms"} <= set(ckpt)
    assert ckpt["arch"] == "resnet50" and ckpt["epoch"] == 1 and len(ckpt["norms"]) == 2
    sd = ckpt["state_dict"]
    import torchvision

    resnet_keys = [k for k in torchvision.models.resnet50().state_dict() if not k.startswith("fc.")]
    for prefix in ("module.encoder_q.", "module.encoder_k."):
        for k in resnet_keys:
            assert prefix + k in sd, prefix + k
        assert tuple(sd[prefix + "conv1.weight"].shape) == (64, 1, 7, 7)
        assert tuple(sd[prefix + "fc.0.weight"].shape) == (2048, 2048)
        assert tuple(sd[prefix + "fc.2.weight"].shape) == (128, 2048)
    assert tuple(sd["module.queue"].shape) == (128, 16)
    assert tuple(sd["module.queue_ptr"].shape) == (1,)
    expected = {f"module.encoder_{e}.{k}" for e in "qk" for k in resnet_keys}
    expected |= {f"module.encoder_{e}.fc.{i}.{p}" for e in "qk" for i in (0, 2)
                 for p in ("weight", "bias")}
    expected |= {"module.queue", "module.queue_ptr"}
    assert set(sd) == expected
    # the fine-tuning loader takes our checkpoint as it takes the released one: every tensor
    from napari_cem.model import build_unet
    from napari_cem.weights import load_encoder_weights

    unet = build_unet(1)
    info = load_encoder_weights(unet, ckpt_dir / CHECKPOINT_NAME, download=False)
    assert info["layout"] == "mocov2"
    assert info["n_tensors_loaded"] == info["n_encoder_tensors"] == 265  # all of ResNet50
    assert info["norms"] == pytest.approx(ckpt["norms"])
    torch.testing.assert_close(unet.encoder.state_dict()["layer4.2.conv3.weight"],
                               sd["module.encoder_q.layer4.2.conv3.weight"])


@pytest.mark.slow
def test_resume_continues_bit_for_bit(tmp_path):
    data = _patches(tmp_path / "p")
    config = PretrainConfig(epochs=2, **SMALL)
    list(pretrain(data, tmp_path / "straight", config, device="cpu"))
    first = PretrainConfig(**{**config.__dict__, "max_minutes": 0.0})  # stops after epoch 1
    logs = list(pretrain(data, tmp_path / "resumed", first, device="cpu"))
    assert [log.epoch for log in logs] == [1]
    logs = list(pretrain(data, tmp_path / "resumed", config, device="cpu", resume=True))
    assert [log.epoch for log in logs] == [2]
    a = _state(tmp_path / "straight" / CHECKPOINT_NAME)
    b = _state(tmp_path / "resumed" / CHECKPOINT_NAME)
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "resumed" / "checkpoint_prev.pth.tar").exists()


def test_stop_keeps_the_last_checkpoint(tmp_path):
    data = _patches(tmp_path / "p")
    config = PretrainConfig(epochs=3, **SMALL)
    seen = {"epoch": 0}

    def progress(done, total, stage):
        if stage.startswith("epoch "):  # "epoch 2 / 3, loss ..."
            seen["epoch"] = int(stage.split()[1])

    with pytest.raises(Cancelled):  # stopped during epoch 2
        list(pretrain(data, tmp_path / "out", config, device="cpu", progress=progress,
                      should_stop=lambda: seen["epoch"] == 2))
    ckpt = load_pretrain_checkpoint(tmp_path / "out" / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 1


def test_augmented_views_have_the_requested_size_and_differ():
    batch = torch.from_numpy((np.random.default_rng(0).random((6, 48, 48)) * 255).astype(np.uint8))
    g = torch.Generator().manual_seed(0)
    a = augment_views(batch, 0.5, 0.2, g, 32)
    b = augment_views(batch, 0.5, 0.2, g, 32)
    assert a.shape == (6, 1, 32, 32) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


def test_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        PatchFolder(empty)
    mixed = _patches(tmp_path / "mixed", n=6, size=40)
    _patches(tmp_path / "mixed" / "big", n=3, size=80, seed=1)
    (mixed / "broken.tif").write_bytes(b"not a tiff")
    (mixed / "broken.png").write_bytes(b"\x89PNG nope")
    folder = PatchFolder(mixed, size=32)
    assert len(folder) == 9 and folder.skipped == 2 and folder.data.shape == (9, 32, 32)
    with pytest.raises(ValueError, match="larger than the data set"):
        list(pretrain(mixed, tmp_path / "out", PretrainConfig(epochs=1, **{**SMALL, "batch_size": 16,
                                                                          "queue_size": 32}),
                      device="cpu"))
    with pytest.raises(ValueError, match="no checkpoint"):
        list(pretrain(mixed, tmp_path / "none", PretrainConfig(epochs=1, **SMALL), device="cpu",
                      resume=True))


def test_patch_cache_is_memory_mapped_reused_and_refreshed(tmp_path, monkeypatch):
    import napari_cem.pretrain as pt

    data = _patches(tmp_path / "p", n=10)
    (data / "broken.tif").write_bytes(b"not a tiff")
    cache = tmp_path / "out" / "patches_32.npy"
    first = PatchFolder(data, size=32, cache=cache)
    assert cache.exists() and cache.with_suffix(".json").exists()
    assert not cache.with_name(cache.name + ".part").exists()
    assert len(first) == 10 and first.skipped == 1
    in_ram = PatchFolder(data, size=32)
    assert torch.equal(first.data, in_ram.data)
    # unchanged folder: nothing is decoded again (a resume starts at once)
    monkeypatch.setattr(pt, "_read_gray", lambda path: (_ for _ in ()).throw(AssertionError(path)))
    again = PatchFolder(data, size=32, cache=cache)
    assert torch.equal(again.data, in_ram.data) and again.skipped == 1
    assert [f.name for f in again.files] == [f.name for f in first.files]
    monkeypatch.undo()
    # a new image invalidates the cache
    tifffile.imwrite(data / "p999.tif", np.full((40, 40), 7, np.uint8))
    fresh = PatchFolder(data, size=32, cache=cache)
    assert len(fresh) == 11 and int(fresh.data[-1].float().mean()) == 7
    # normalisation statistics are those of the pixels
    mean, std = fresh.norms()
    pixels = fresh.data.double() / 255
    assert mean == pytest.approx(float(pixels.mean())) and std == pytest.approx(float(pixels.std()))


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path):
    data = _patches(tmp_path / "p", n=8)
    out = tmp_path / "out"
    config = PretrainConfig(epochs=2, **SMALL)
    list(pretrain(data, out, config, device="cpu"))
    assert (out / "checkpoint_prev.pth.tar").exists()
    # a crash between moving the old file aside and putting the new one in place
    (out / CHECKPOINT_NAME).unlink()
    logs = list(pretrain(data, out, PretrainConfig(epochs=3, **SMALL), device="cpu", resume=True))
    assert [log.epoch for log in logs] == [2, 3]


def test_cli_pretrain_runs_and_reports_errors(tmp_path, capsys):
    from napari_cem.cli import main

    data = _patches(tmp_path / "p", n=8)
    rc = main(["pretrain", str(data), "-o", str(tmp_path / "out"), "--epochs", "1", "--batch",
               "8", "--queue", "16", "--arch", "resnet18", "--crop", "32", "--device", "cpu"])
    assert rc == 0 and (tmp_path / "out" / CHECKPOINT_NAME).exists()
    assert main(["pretrain", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o2")]) == 2
    assert "not a folder of patches" in capsys.readouterr().err


def _rank_main(rank, init, data, out, result_dir):  # runs in a spawned process
    import torch
    import torch.distributed as dist

    import napari_cem.pretrain as pt

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    held = {}
    original = pt._enqueue

    def spy(moco, keys):  # keep a handle on this rank's model
        held["moco"] = moco
        original(moco, keys)

    pt._enqueue = spy
    config = PretrainConfig(epochs=1, **SMALL)
    list(pt.pretrain(data, out, config, device="cpu"))
    state = {k: v.detach().clone() for k, v in held["moco"].state_dict().items()}
    torch.save(state, Path(result_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_stay_in_sync(tmp_path):
    data = _patches(tmp_path / "p", n=16)
    init = f"file://{tmp_path / 'rendezvous'}"
    code = (
        "import sys; sys.path.insert(0, %r); import test_pretrain as t; "
        "t._rank_main(int(sys.argv[1]), %r, %r, %r, %r)"
        % (str(Path(__file__).parent), init, str(data), str(tmp_path / "out"), str(tmp_path))
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r)], env=env,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # parameters and the queue agree; BatchNorm running statistics are per rank, as in MoCo
    compared = [k for k in a if not k.endswith(("running_mean", "running_var"))]
    assert any(k.startswith("encoder_k.") for k in compared) and "queue" in compared
    for k in compared:
        assert torch.equal(a[k], b[k]), k
    # each step enqueued the keys of both ranks (8 per step): 2 steps fill the queue of 16
    assert int(a["queue_ptr"]) == 0
    assert (tmp_path / "out" / CHECKPOINT_NAME).exists()  # written by rank 0 only
