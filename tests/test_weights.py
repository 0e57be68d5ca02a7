"""Encoder weight loading for every checkpoint layout, refusals, and the pooch download.

Checkpoints are generated here with exactly the released key names and shapes (the
ResNet50 names and shapes come from smp's encoder, which is torchvision's ResNet50).
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
import torch

from napari_cem import weights as W
from napari_cem.model import build_unet


@pytest.fixture(scope="module")
def resnet_state():
    """A ResNet50 state dict with torchvision names (minus fc), distinct random values."""
    torch.manual_seed(3)
    enc = build_unet(1).encoder
    state = {}
    for k, v in enc.state_dict().items():
        state[k] = torch.randn(v.shape) if v.is_floating_point() else v.clone()
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 0.5
    return state


def _moco(resnet_state, prefix="module."):
    sd = {}
    for k, v in resnet_state.items():
        sd[f"{prefix}encoder_q.{k}"] = v
        sd[f"{prefix}encoder_k.{k}"] = v  # shared storage: the file stays small
    for enc in ("encoder_q", "encoder_k"):
        sd[f"{prefix}{enc}.fc.0.weight"] = torch.zeros(2048, 2048)
        sd[f"{prefix}{enc}.fc.0.bias"] = torch.zeros(2048)
        sd[f"{prefix}{enc}.fc.2.weight"] = torch.zeros(128, 2048)
        sd[f"{prefix}{enc}.fc.2.bias"] = torch.zeros(128)
    sd[f"{prefix}queue"] = torch.zeros(128, 65536)
    sd[f"{prefix}queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 200, "arch": "resnet50", "state_dict": sd, "optimizer": {},
            "norms": [0.58331613, 0.09966064]}


def _swav(resnet_state):
    sd = {f"module.{k}": v for k, v in resnet_state.items()}
    sd["module.projection_head.0.weight"] = torch.zeros(2048, 2048)
    sd["module.projection_head.0.bias"] = torch.zeros(2048)
    sd["module.projection_head.1.weight"] = torch.ones(2048)
    sd["module.projection_head.3.weight"] = torch.zeros(128, 2048)
    sd["module.prototypes.weight"] = torch.zeros(3000, 128)
    return {"epoch": 200, "arch": "resnet50", "state_dict": sd, "norms": [0.57, 0.12]}


def _torchvision(resnet_state):
    sd = dict(resnet_state)
    sd["conv1.weight"] = torch.randn(64, 3, 7, 7)
    sd["fc.weight"] = torch.zeros(1000, 2048)
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def _save(obj, path):
    torch.save(obj, path)
    return path


def _assert_loaded(model, resnet_state, skip=("conv1.weight",)):
    enc = model.encoder.state_dict()
    for k, v in resnet_state.items():
        if k.endswith("num_batches_tracked") or k in skip:
            continue
        assert torch.equal(enc[k], v), k


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_mocov2_layout(tmp_path, resnet_state, prefix):
    path = _save(_moco(resnet_state, prefix), tmp_path / "moco.pth.tar")
    ckpt = W.read_checkpoint(path)
    assert W.detect_layout(ckpt) == "mocov2"
    model = build_unet(1)
    info = W.load_encoder_weights(model, path)
    n = sum(1 for k in resnet_state if not k.endswith("num_batches_tracked"))
    assert info["layout"] == "mocov2" and info["n_tensors_loaded"] == n == info["n_encoder_tensors"] == 265
    assert info["norms"] == pytest.approx([0.58331613, 0.09966064])
    _assert_loaded(model, resnet_state, skip=())


def test_swav_layout(tmp_path, resnet_state):
    path = _save(_swav(resnet_state), tmp_path / "swav.pth.tar")
    model = build_unet(3)
    info = W.load_encoder_weights(model, path)
    assert info["layout"] == "swav" and info["n_tensors_loaded"] == 265
    assert info["norms"] == pytest.approx([0.57, 0.12])
    _assert_loaded(model, resnet_state, skip=())


def test_torchvision_layout_sums_rgb_conv1(tmp_path, resnet_state):
    sd = _torchvision(resnet_state)
    path = _save(sd, tmp_path / "resnet50.pth")
    model = build_unet(1)
    info = W.load_encoder_weights(model, path)
    assert info["layout"] == "torchvision" and info["n_tensors_loaded"] == 265
    assert info["norms"] == pytest.approx(list(W.IMAGENET_GREY_NORMS))
    assert torch.allclose(model.encoder.conv1.weight, sd["conv1.weight"].sum(1, keepdim=True))
    _assert_loaded(model, resnet_state)


def test_smp_layout_and_none(tmp_path):
    src = build_unet(1)
    path = _save({"state_dict": src.state_dict()}, tmp_path / "unet.pt")
    model = build_unet(1)
    info = W.load_encoder_weights(model, path)
    assert info["layout"] == "smp" and info["n_tensors_loaded"] == 265 and info["norms"] is None
    assert torch.equal(model.encoder.layer4[2].conv3.weight, src.encoder.layer4[2].conv3.weight)
    none = W.load_encoder_weights(build_unet(1), "none")
    assert none["layout"] == "none" and none["n_tensors_loaded"] == 0


def test_partial_load_is_refused(tmp_path, resnet_state):
    partial = {k: v for k, v in resnet_state.items() if not k.startswith("layer4.")}
    path = _save(_moco(partial), tmp_path / "partial.pth.tar")
    with pytest.raises(ValueError, match="refusing a partial load"):
        W.load_encoder_weights(build_unet(1), path)


def test_load_that_matches_nothing_is_refused(tmp_path):
    ckpt = {"state_dict": {"module.encoder_q.fc.0.weight": torch.zeros(4, 4),
                           "module.encoder_q.backbone.conv.weight": torch.zeros(2, 2)}}
    path = _save(ckpt, tmp_path / "empty.pth.tar")
    with pytest.raises(ValueError, match="none of the 265"):
        W.load_encoder_weights(build_unet(1), path)


def test_wrong_architecture_is_refused(tmp_path):
    import torchvision

    path = _save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match="resnet18.pth is a ResNet18 encoder; the U-Net has a ResNet50"):
        W.load_encoder_weights(build_unet(1), path)


def test_corrupt_and_code_files_are_refused(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(ValueError, match="not a weights file napari-cem can load safely"):
        W.load_encoder_weights(build_unet(1), junk)
    # a pickle that would run code (an arbitrary object) is refused by weights_only loading
    code = tmp_path / "code.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": Path("/")}, code)
    with pytest.raises(ValueError, match="not a weights file napari-cem can load safely") as refused:
        W.read_checkpoint(code)
    assert "weights_only" not in str(refused.value) and "pathlib" in str(refused.value)
    other = _save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a ResNet checkpoint"):
        W.load_encoder_weights(build_unet(1), other)
    with pytest.raises(ValueError, match="not found"):
        W.load_encoder_weights(build_unet(1), tmp_path / "missing.pth")


# -- download ----------------------------------------------------------------------------------
class _Server:
    """A local HTTP server serving bytes, honouring Range requests, counting requests."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append({"path": self.path, "range": self.headers.get("Range")})
                data = outer.payload
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    body = data[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):  # noqa: N802
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cem500k_mocov2_resnet50_200ep.pth.tar"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def small_moco_bytes(tmp_path):
    sd = {"module.encoder_q.conv1.weight": torch.randn(64, 1, 7, 7),
          "module.encoder_q.layer1.0.conv1.weight": torch.randn(64, 64, 1, 1),
          "module.queue": torch.zeros(128, 16)}
    path = _save({"state_dict": sd, "norms": [0.5, 0.1]}, tmp_path / "src.pth.tar")
    return path.read_bytes()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_CEM_CACHE", str(folder))
    return folder


def test_download_by_name_with_hash_into_cache(small_moco_bytes, cache):
    server = _Server(small_moco_bytes)
    try:
        sha = "sha256:" + __import__("hashlib").sha256(small_moco_bytes).hexdigest()
        path = W.fetch_weights("cem500k-mocov2", url=server.url, known_hash=sha, min_bytes=1000)
        assert path == cache / "weights" / "cem500k_mocov2_resnet50_200ep.pth.tar"
        assert path.read_bytes() == small_moco_bytes
        n = len(server.requests)
        # cached: a second call does not download again, resolve_weights finds it offline
        assert W.fetch_weights("cem500k-mocov2", url=server.url, known_hash=sha, min_bytes=1000) == path
        assert len(server.requests) == n
        assert W.resolve_weights("cem500k-mocov2", download=False) == path
    finally:
        server.close()


def test_download_with_wrong_hash_leaves_nothing(small_moco_bytes, cache):
    server = _Server(small_moco_bytes)
    try:
        with pytest.raises(ValueError, match="corrupt"):
            W.fetch_weights("cem500k-mocov2", url=server.url, known_hash="sha256:" + "0" * 64,
                            min_bytes=1000)
        assert not W.is_cached("cem500k-mocov2")
    finally:
        server.close()


def test_download_resumes_a_partial_file(small_moco_bytes, cache):
    server = _Server(small_moco_bytes)
    try:
        part = cache / "weights" / "cem500k_mocov2_resnet50_200ep.pth.tar.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(small_moco_bytes[:1500])
        seen = []
        path = W.fetch_weights("cem500k-mocov2", url=server.url, known_hash=None, min_bytes=1000,
                               progress=lambda done, total, _stage: seen.append((done, total)))
        assert path.read_bytes() == small_moco_bytes
        assert server.requests[-1]["range"] == "bytes=1500-"
        assert seen[-1] == (len(small_moco_bytes), len(small_moco_bytes))
        assert not part.exists()
    finally:
        server.close()


def test_download_of_a_wrong_file_is_rejected(cache):
    server = _Server(b"<html>rate limited</html>" * 100)
    try:
        with pytest.raises(ValueError, match="not a usable checkpoint"):
            W.fetch_weights("cem500k-mocov2", url=server.url, known_hash=None, min_bytes=10)
        with pytest.raises(ValueError, match="only"):
            W.fetch_weights("cem500k-mocov2", url=server.url, known_hash=None)  # below 50 MB
        assert not W.is_cached("cem500k-mocov2")
    finally:
        server.close()


def test_names_and_offline_errors(cache):
    assert set(W.WEIGHT_CHOICES) == {"none", "cem500k-mocov2", "cem1.5m-swav"}
    assert "6453140" in W.KNOWN_WEIGHTS["cem500k-mocov2"].url
    assert "6453160" in W.KNOWN_WEIGHTS["cem1.5m-swav"].url
    with pytest.raises(ValueError, match="not downloaded yet"):
        W.resolve_weights("cem1.5m-swav", download=False)
    with pytest.raises(ValueError, match="Unknown weights"):
        W.fetch_weights("imagenet")
    assert W.resolve_weights(None) is None and W.resolve_weights("none") is None


def test_first_good_download_records_its_sha256_and_a_changed_file_is_refused(small_moco_bytes, cache):
    import hashlib

    server = _Server(small_moco_bytes)
    try:
        path = W.fetch_weights("cem500k-mocov2", url=server.url, known_hash=None, min_bytes=1000)
    finally:
        server.close()
    sha = hashlib.sha256(small_moco_bytes).hexdigest()
    record = path.with_name(path.name + ".sha256")
    assert record.read_text().split() == [sha, path.name]  # sha256sum's format
    assert W.recorded_sha256("cem500k-mocov2") == sha
    assert W.resolve_weights("cem500k-mocov2", download=False) == path  # verified, same file
    changed = bytearray(small_moco_bytes)
    changed[len(changed) // 2] ^= 0xFF
    path.write_bytes(bytes(changed))  # changed after the download
    with pytest.raises(ValueError, match="changed since they were downloaded"):
        W.resolve_weights("cem500k-mocov2", download=False)
    with pytest.raises(ValueError, match="changed since they were downloaded"):
        W.fetch_weights("cem500k-mocov2", url="http://127.0.0.1:9/never", min_bytes=1000)


def test_a_pinned_sha256_is_enforced_on_download_and_on_use(small_moco_bytes, cache, monkeypatch):
    import hashlib

    sha = hashlib.sha256(small_moco_bytes).hexdigest()
    assert W.pin_variable("cem500k-mocov2") == "NAPARI_CEM_WEIGHTS_SHA256_CEM500K_MOCOV2"
    assert W.pin_variable("cem1.5m-swav") == "NAPARI_CEM_WEIGHTS_SHA256_CEM1_5M_SWAV"
    server = _Server(small_moco_bytes)
    try:
        monkeypatch.setenv("NAPARI_CEM_WEIGHTS_SHA256_CEM500K_MOCOV2", "0" * 64)
        with pytest.raises(ValueError, match="corrupt"):  # pooch checks the pin
            W.fetch_weights("cem500k-mocov2", url=server.url, min_bytes=1000)
        assert not W.is_cached("cem500k-mocov2")
        monkeypatch.setenv("NAPARI_CEM_WEIGHTS_SHA256_CEM500K_MOCOV2", sha.upper())
        path = W.fetch_weights("cem500k-mocov2", url=server.url, min_bytes=1000)
    finally:
        server.close()
    monkeypatch.setenv("NAPARI_CEM_WEIGHTS_SHA256_CEM500K_MOCOV2", "f" * 64)
    with pytest.raises(ValueError, match="pinned in NAPARI_CEM_WEIGHTS_SHA256_CEM500K_MOCOV2"):
        W.resolve_weights("cem500k-mocov2", download=False)
    monkeypatch.setenv("NAPARI_CEM_WEIGHTS_SHA256_CEM500K_MOCOV2", "abc")
    with pytest.raises(ValueError, match="64 hex digits"):
        W.resolve_weights("cem500k-mocov2", download=False)
    assert path.exists()


def test_a_cached_file_without_a_record_is_checked_then_recorded(small_moco_bytes, cache, monkeypatch):
    target = W.cached_path("cem500k-mocov2")
    target.parent.mkdir(parents=True)
    target.write_bytes(small_moco_bytes)  # an older napari-cem's download: no .sha256
    import dataclasses

    small = dataclasses.replace(W.KNOWN_WEIGHTS["cem500k-mocov2"], min_bytes=1000)
    monkeypatch.setitem(W.KNOWN_WEIGHTS, "cem500k-mocov2", small)
    assert W.recorded_sha256("cem500k-mocov2") is None
    assert W.verify_cached("cem500k-mocov2") == target
    assert W.recorded_sha256("cem500k-mocov2") is not None
    target.write_bytes(b"<html>not weights</html>" * 100)
    target.with_name(target.name + ".sha256").unlink()
    with pytest.raises(ValueError, match="not a usable checkpoint"):
        W.verify_cached("cem500k-mocov2")


def test_info_prints_the_weights_hashes(small_moco_bytes, cache, napari_cem):
    import hashlib

    code, out, err = napari_cem("info", env={"NAPARI_CEM_CACHE": str(cache),
                                             "NAPARI_CEM_WEIGHTS_SHA256_CEM1_5M_SWAV": "ab" * 32})
    assert code == 0, err
    assert "cem500k-mocov2" in out and "not downloaded" in out
    assert "NAPARI_CEM_WEIGHTS_SHA256_CEM500K_MOCOV2" in out and "ab" * 32 in out
    target = W.cached_path("cem500k-mocov2", cache / "weights")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(small_moco_bytes)
    sha = hashlib.sha256(small_moco_bytes).hexdigest()
    target.with_name(target.name + ".sha256").write_text(f"{sha}  {target.name}\n")
    code, out, err = napari_cem("info", env={"NAPARI_CEM_CACHE": str(cache)})
    assert f"cached, SHA-256 {sha}" in out
