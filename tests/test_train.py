"""Fine-tuning core: label convention, loss masking, training, stop, frozen encoder, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cem._cancel import Cancelled
from napari_cem.model import build_unet, load_bundle, save_bundle
from napari_cem.synthetic import make_em_volume
from napari_cem.train import (
    IGNORE,
    class_weights,
    finetune,
    masked_loss,
    prepare_training_data,
    run_finetune,
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def sample():
    return make_em_volume((4, 96, 96), isotropic=False, seed=3)


# -- labels -> targets ---------------------------------------------------------------------------
def test_painted_values_map_to_output_classes():
    image = np.zeros((2, 8, 8), np.uint8)
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[0, :2] = 1  # mito
    labels[0, 2:4] = 2  # background
    labels[0, 4:5] = 3  # membrane
    data = prepare_training_data(image, labels, class_names=["mito", "background", "membrane"])
    assert data.classes == ["background", "mito", "membrane"]
    assert data.value_map == {1: 1, 2: 0, 3: 2}
    target = data.views[0][1]
    assert (target[0, :2] == 1).all() and (target[0, 2:4] == 0).all() and (target[0, 4] == 2).all()
    assert (target[0, 5:] == IGNORE).all() and (target[1] == IGNORE).all()  # 0 = not annotated
    # without names value 1 is the background
    data = prepare_training_data(image, labels)
    assert data.classes == ["background", "class 2", "class 3"] and data.value_map[1] == 0


def test_complete_slices_and_rois():
    image = np.zeros((3, 8, 8), np.uint8)
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[1, 2:4, 2:4] = 1
    data = prepare_training_data(image, labels, class_names=["mito"], complete_slices=True)
    assert data.classes == ["background", "mito"]
    t = data.views[0][1]
    assert (t[1, 2:4, 2:4] == 1).all() and t[1].sum() == 4 and (t[1] != IGNORE).all()
    assert (t[0] == IGNORE).all() and (t[2] == IGNORE).all()  # unpainted slices stay unknown
    # ROIs: only inside the rectangle do zeros mean background; an ROI may be in an empty slice
    data = prepare_training_data(image, labels, class_names=["mito"], complete_slices=True,
                                 rois=[(1, 0, 0, 5, 5), (2, 0, 0, 2, 2)])
    t = data.views[0][1]
    assert (t[1, :5, :5] != IGNORE).all() and (t[1, 5:] == IGNORE).all()
    assert (t[2, :2, :2] == 0).all() and (t[2, 2:] == IGNORE).all()


def test_crops_are_centred_on_rare_structures_as_asked():
    from napari_cem.train import _CropSampler

    image = np.zeros((2, 64, 64), np.uint8)
    labels = np.zeros((2, 64, 64), np.uint8)
    labels[0, 10:12, 50:52] = 1  # a rare structure: 4 of 8192 painted pixels
    labels[1, 30, 30] = 2
    data = prepare_training_data(image, labels, class_names=["mito", "er"], complete_slices=True)
    for share in (0.0, 0.5):
        sampler = _CropSampler(data, 8, 0.0, np.random.default_rng(0), structure_fraction=share)
        points = [sampler._point(0) for _ in range(2000)]
        on_mito = np.mean([(k == 0 and 10 <= y < 12 and 50 <= x < 52) for k, y, x in points])
        on_er = np.mean([(k, y, x) == (1, 30, 30) for k, y, x in points])
        if share == 0:
            assert on_mito + on_er < 0.01
        else:  # both structure classes drawn evenly
            assert 0.2 < on_mito < 0.3 and 0.2 < on_er < 0.3


def test_isotropic_volumes_add_xz_and_yz_planes():
    image = np.zeros((4, 8, 8), np.uint8)
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[1, :4] = 1
    labels[1, 4:] = 2
    data = prepare_training_data(image, labels, voxel_size=(8, 8, 8))
    assert [v[2] for v in data.views] == ["xy", "xz", "yz"]
    assert all(w.sum() == 64 for w in data.slice_weights)
    data = prepare_training_data(image, labels, voxel_size=(40, 8, 8))
    assert [v[2] for v in data.views] == ["xy"]


@pytest.mark.parametrize("labels, kwargs, message", [
    (np.zeros((2, 8, 8), np.uint8), {}, "Nothing is painted"),
    (np.zeros((2, 8, 9), np.uint8), {}, "same shape"),
    (np.ones((2, 8, 8), np.uint8), {}, "Only one class"),
    (np.full((2, 8, 8), 2, np.uint8), {"complete_slices": False}, "Only one class|No background"),
    (np.pad(np.full((2, 8, 4), 3, np.uint8), ((0, 0), (0, 0), (0, 4)), constant_values=1),
     {"class_names": ["background", "mito"]}, "Label value 3 is painted but there are only 2 classes"),
    (np.pad(np.full((2, 8, 4), 2, np.uint8), ((0, 0), (0, 0), (0, 4))), {}, "No background is painted"),
])
def test_bad_labels_are_explained(labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prepare_training_data(np.zeros((2, 8, 8), np.uint8), labels, **kwargs)


def test_other_bad_input():
    img = np.zeros((2, 8, 8), np.uint8)
    lab = np.zeros((2, 8, 8), np.uint8)
    lab[0, 0] = 1
    lab[0, 1] = 2
    with pytest.raises(ValueError, match="8-bit"):
        prepare_training_data(img.astype(np.float32), lab)
    with pytest.raises(ValueError, match="distinct"):
        prepare_training_data(img, lab, class_names=["a", "A"])
    with pytest.raises(ValueError, match="crop size"):
        next(finetune(img, lab, crop_size=100, device="cpu"))
    with pytest.raises(ValueError, match="iterations"):
        next(finetune(img, lab, iterations=0, device="cpu"))


def test_finetune_config_checks_its_settings_once():
    from napari_cem.train import FinetuneConfig

    assert FinetuneConfig(iterations="7", batch_size=4.0).iterations == 7  # the widget's numbers
    for bad, match in [({"crop_size": 100}, "multiple of 32"), ({"iterations": 0}, "iterations"),
                       ({"batch_size": 0}, "batch size"), ({"freeze": "all"}, "freeze"),
                       ({"random_crop_fraction": 1.5}, "random_crop_fraction"),
                       ({"structure_crop_fraction": -0.1}, "structure_crop_fraction")]:
        with pytest.raises(ValueError, match=match):
            FinetuneConfig(**bad)


def test_class_weights_follow_spec():
    assert class_weights([0.8, 0.05, 0.15]) == [0.1, 3.0, 1.0]


# -- loss ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_out", [1, 3])
def test_loss_ignores_unannotated_pixels(n_out):
    torch.manual_seed(0)
    target = torch.randint(0, 2 if n_out == 1 else 3, (2, 16, 16))
    target[:, :, 8:] = IGNORE
    logits = torch.randn(2, n_out, 16, 16, requires_grad=True)
    weights = None if n_out == 1 else [0.1, 3.0, 1.0]
    loss = masked_loss(logits, target, weights)
    loss.backward()
    assert logits.grad[..., 8:].abs().max() == 0  # no gradient where nothing is annotated
    assert logits.grad[..., :8].abs().max() > 0
    changed = logits.detach().clone()
    changed[..., 8:] = 100.0
    assert torch.allclose(masked_loss(changed, target, weights), loss.detach())
    all_ignored = torch.full_like(target, IGNORE)
    assert float(masked_loss(logits.detach(), all_ignored, weights)) == 0.0


# -- training --------------------------------------------------------------------------------------
def test_a_config_with_keyword_overrides(sample):
    from napari_cem.train import FinetuneConfig

    labels = (sample.labels == 2).astype(np.uint8)
    config = FinetuneConfig(iterations=40, crop_size=64, batch_size=2, device="cpu", seed=3)
    bundle = run_finetune(sample.image, labels, config, classes=["mito"], complete_slices=True,
                          iterations=2)  # a keyword overrides the config's field
    t = bundle.training
    assert t["iterations"] == t["iterations_planned"] == 2 and t["seed"] == 3 and t["crop_size"] == 64
    assert config.iterations == 40  # the config itself is unchanged (frozen)


def test_stop_mid_training_keeps_a_loadable_bundle(sample, tmp_path):
    labels = (sample.labels == 2).astype(np.uint8)
    steps = []
    bundle = run_finetune(sample.image, labels, callback=steps.append, classes=["mito"],
                          complete_slices=True, iterations=50, crop_size=64, batch_size=2,
                          device="cpu", should_stop=lambda: len(steps) >= 2, data_source="synthetic")
    assert [s.iteration for s in steps] == [1, 2] and all(s.total == 50 for s in steps)
    assert all(np.isfinite(s.loss) and s.lr > 0 for s in steps)
    t = bundle.training
    assert t["iterations"] == 2 and t["stopped_early"] and len(t["loss"]) == 2
    assert t["data_source"] == "synthetic" and t["device"].startswith("cpu")
    assert bundle.classes == ["background", "mito"] and bundle.encoder["frozen"] == "none"
    loaded = load_bundle(save_bundle(bundle, tmp_path / "stopped.pt"))
    assert loaded.training["stopped_early"] and loaded.classes == bundle.classes


def test_stop_before_the_first_iteration_cancels(sample):
    labels = (sample.labels == 2).astype(np.uint8)
    with pytest.raises(Cancelled):
        run_finetune(sample.image, labels, complete_slices=True, iterations=5, crop_size=64,
                     batch_size=2, device="cpu", should_stop=lambda: True)


def test_frozen_encoder_keeps_pretrained_weights_and_bn_stats(sample, tmp_path):
    src = build_unet(1)
    with torch.no_grad():
        for m in src.encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    ckpt = tmp_path / "encoder.pt"
    torch.save({"state_dict": src.state_dict(), "norms": [0.5, 0.2]}, ckpt)
    labels = sample.labels.astype(np.uint8) + 1  # every pixel painted; value 1 = background
    previews = []
    bundle = run_finetune(sample.image[:2], labels[:2], weights=str(ckpt), iterations=2, crop_size=64,
                          batch_size=2, device="cpu", preview_request=lambda: sample.image[0],
                          callback=lambda p: previews.append(p.preview))
    assert bundle.encoder["frozen"] == "encoder" and bundle.encoder["n_tensors_loaded"] == 265
    assert bundle.norms == (0.5, 0.2) and bundle.encoder["norms_source"] == "checkpoint"
    enc = bundle.model.encoder.state_dict()
    for k, v in src.encoder.state_dict().items():
        assert torch.equal(enc[k].cpu(), v), k  # weights and running statistics untouched
    dec_before = src.decoder.state_dict()
    assert any(not torch.equal(v.cpu(), dec_before[k]) for k, v in bundle.model.decoder.state_dict().items()
               if v.is_floating_point())
    assert len(bundle.classes) == 4 and bundle.n_outputs == 4  # background + 3 structures
    assert previews[0].shape == sample.image[0].shape and previews[0].max() < 4


@pytest.mark.slow
def test_a_few_iterations_drive_loss_down_and_iou_up():
    vol = make_em_volume((2, 128, 128), isotropic=False, seed=0)
    labels = (vol.labels == 1).astype(np.uint8)  # membranes vs the rest, complete slices
    steps = []
    run_finetune(vol.image, labels, callback=steps.append, complete_slices=True, iterations=40,
                 crop_size=64, batch_size=4, device="cpu", random_crop_fraction=1.0)
    first = np.mean([s.loss for s in steps[:8]])
    last = np.mean([s.loss for s in steps[-8:]])
    iou_first = np.mean([s.train_iou or 0 for s in steps[:8]])
    iou_last = np.mean([s.train_iou or 0 for s in steps[-8:]])
    assert last < 0.8 * first
    assert iou_last > iou_first + 0.1


def test_out_of_memory_halves_the_batch_and_says_so(sample, monkeypatch):
    import napari_cem.model as model_module

    real = model_module.forward_logits
    calls = []

    def flaky(model, x, **kwargs):
        calls.append(x.shape[0])
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, x, **kwargs)

    monkeypatch.setattr(model_module, "forward_logits", flaky)
    labels = (sample.labels == 2).astype(np.uint8)
    steps = []
    bundle = run_finetune(sample.image, labels, callback=steps.append, complete_slices=True,
                          iterations=1, crop_size=64, batch_size=4, device="cpu")
    assert calls == [4, 2]
    assert "batch halved to 2" in steps[0].message and steps[0].batch_size == 2
    assert bundle.training["batch_size"] == 2


# -- continue from a model -----------------------------------------------------------------------
def _parameters(model):
    return {k: v.detach().float().cpu().clone() for k, v in model.named_parameters()}


def test_a_round_continues_from_the_whole_model(sample, tmp_path):
    """Continue = the parent's encoder *and* decoder: with a vanishing learning rate the
    child ends where the parent ended; a fresh start does not. The chain is recorded."""
    from napari_cem.model import load_bundle, save_bundle
    from napari_cem.train import FinetuneConfig

    labels = (sample.labels == 2).astype(np.uint8)
    base = dict(classes=["mito"], complete_slices=True)
    config = FinetuneConfig(iterations=3, crop_size=64, batch_size=2, device="cpu")
    parent = run_finetune(sample.image, labels, config, **base)
    save_bundle(parent, tmp_path / "parent.pt")
    still = FinetuneConfig(iterations=1, crop_size=64, batch_size=2, device="cpu", lr=1e-12,
                           init=tmp_path / "parent.pt")
    child = run_finetune(sample.image, labels, still, **base)
    fresh = run_finetune(sample.image, labels, FinetuneConfig(iterations=1, crop_size=64, batch_size=2,
                                                              device="cpu", lr=1e-12, seed=7), **base)
    want, got, other = _parameters(parent.model), _parameters(child.model), _parameters(fresh.model)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert not all(torch.allclose(other[k], want[k], atol=1e-3) for k in want)
    assert child.norms == parent.norms and child.encoder["frozen"] == parent.encoder["frozen"]
    assert child.training["lineage"] == {"parent": str(tmp_path / "parent.pt"), "rounds": [3]}
    # a round from the in-memory child (the widget's active model): the chain goes on
    grandchild = run_finetune(sample.image, labels, FinetuneConfig(iterations=2, crop_size=64, batch_size=2,
                                                                   device="cpu", init=child), **base)
    assert grandchild.training["lineage"]["rounds"] == [3, 1]
    # the parent was copied, not trained in place
    assert all(torch.equal(v, _parameters(load_bundle(tmp_path / "parent.pt").model)[k])
               for k, v in _parameters(parent.model).items())


def test_continuing_needs_the_same_classes(sample):
    from napari_cem.train import FinetuneConfig

    labels = (sample.labels == 2).astype(np.uint8)
    parent = run_finetune(sample.image, labels, FinetuneConfig(iterations=1, crop_size=64, batch_size=2,
                                                                device="cpu"),
                          classes=["mito"], complete_slices=True)
    two = np.where(sample.labels == 2, 1, np.where(sample.labels == 1, 2, 0)).astype(np.uint8)
    with pytest.raises(ValueError, match=r"new class 'membrane'.*allow new classes"):
        run_finetune(sample.image, two, FinetuneConfig(iterations=1, crop_size=64, device="cpu",
                                                       init=parent),
                     classes=["mito", "membrane"], complete_slices=True)
    # a class of the model left unpainted is refused even when new ones are allowed
    only_membrane = (sample.labels == 1).astype(np.uint8)
    with pytest.raises(ValueError, match=r"no paint for 'mito'"):
        run_finetune(sample.image, only_membrane, FinetuneConfig(iterations=1, crop_size=64, device="cpu",
                                                                 init=parent, add_classes=True),
                     classes=["membrane"], complete_slices=True)


def test_new_classes_widen_the_head_when_asked(sample):
    """add_classes: the round gets an output per painted class (the new one in the loss);
    the lineage names the class it added."""
    from napari_cem.train import FinetuneConfig

    labels = (sample.labels == 2).astype(np.uint8)
    parent = run_finetune(sample.image, labels, FinetuneConfig(iterations=1, crop_size=64, batch_size=2,
                                                                device="cpu"),
                          classes=["mito"], complete_slices=True)
    two = np.where(sample.labels == 2, 1, np.where(sample.labels == 1, 2, 0)).astype(np.uint8)
    child = run_finetune(sample.image, two, FinetuneConfig(iterations=2, crop_size=64, batch_size=2,
                                                           device="cpu", init=parent, add_classes=True),
                         classes=["mito", "membrane"], complete_slices=True)
    assert child.classes == ["background", "mito", "membrane"]
    assert child.model.segmentation_head[0].out_channels == 3
    assert child.training["lineage"]["added_classes"] == ["membrane"]
    assert np.isfinite(child.training["loss"]).all() and child.training["class_fractions"][2] > 0
    assert parent.model.segmentation_head[0].out_channels == 1  # the parent is untouched


def test_paint_added_while_training_is_picked_up(sample):
    """The user paints another slice during training: its pixels join the training data at
    the next pick-up, without a restart (complete slices: the whole slice is annotated)."""
    from napari_cem.train import FinetuneConfig

    labels = np.zeros(sample.labels.shape, np.uint8)
    labels[1] = (sample.labels[1] == 2)
    live = labels.copy()
    steps = []

    def on_step(step):
        steps.append(step)
        if step.iteration == 2:
            live[2] = (sample.labels[2] == 2)  # painted while training

    plane = sample.labels.shape[1] * sample.labels.shape[2]
    run_finetune(sample.image, labels, FinetuneConfig(iterations=5, crop_size=64, batch_size=2, device="cpu"),
                 callback=on_step, classes=["mito"], complete_slices=True, live_labels=live, refresh_s=0.0)
    assert [s.painted for s in steps[:2]] == [plane, plane]
    assert steps[-1].painted == 2 * plane
    assert any("paint picked up on 1 slice" in s.message for s in steps)
    assert (labels[2] == 0).all()  # the caller's array is not changed


def test_a_picked_up_slice_may_lack_some_painted_values():
    """Per-slice targets: the lookup covers every mapped value, not only this slice's."""
    from napari_cem.train import IGNORE, _targets

    np.testing.assert_array_equal(_targets(np.array([[0, 1]], np.uint8), {1: 1, 2: 2, 5: 0}),
                                  [[IGNORE, 1]])
