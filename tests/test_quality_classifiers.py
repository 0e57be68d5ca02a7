"""Informative/uninformative classifiers: label checks, training, scoring, active learning,
encoder weights, bad export folders, and the committed VNC labels."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from _quality_helpers import LABELS_CSV, crop_labelled, make_labelled_export, write_export

from napari_cem.quality import (
    PatchSet,
    check_training_labels,
    compute_features,
    fit_classifier,
    most_uncertain,
    score_patches,
)


def test_label_checks_refuse_to_train_with_plain_messages():
    with pytest.raises(ValueError, match=r"at least 10 patches .*you have 9"):
        check_training_labels([1, 0] * 4 + [1])
    with pytest.raises(ValueError, match="All 12 labelled patches are informative.*nothing was trained"):
        check_training_labels([1] * 12)
    with pytest.raises(ValueError, match="are uninformative: label some informative"):
        fit_classifier("rf", np.zeros((12, 4)), [0] * 12)
    with pytest.raises(ValueError, match="unknown classifier"):
        fit_classifier("svm", np.zeros((12, 4)), [0, 1] * 6)


def test_score_patches_checks_labels_before_any_feature(tmp_path, monkeypatch):
    ids, _y = make_labelled_export(tmp_path, 6, 6)
    ps = PatchSet.from_export(tmp_path)
    monkeypatch.setattr("napari_cem.quality.classifiers.compute_features",
                        lambda *a, **k: pytest.fail("features computed despite bad labels"))
    with pytest.raises(ValueError, match="All 10 labelled patches are informative"):
        score_patches(ps, {i: "informative" for i in ids[:10]})
    with pytest.raises(ValueError, match="you have 3"):
        score_patches(ps, {i: "uninformative" for i in ids[:3]})


@pytest.mark.parametrize("model", ["rf", pytest.param("encoder", marks=pytest.mark.slow)])
def test_trained_classifier_separates_textured_from_uniform(tmp_path, model):
    ids, y = make_labelled_export(tmp_path, 16, 8, seed=1)
    ps = PatchSet.from_export(tmp_path)
    labels = {pid: ("informative" if k else "uninformative") for pid, k in zip(ids, y)}
    held_out = ids[-6:]
    for pid in held_out:
        del labels[pid]
    scored = score_patches(ps, labels, model=model, encoder_size=64)
    clf = scored.classifier
    assert clf.n_informative + clf.n_uninformative == len(ids) - 6
    assert clf.cv_auroc is not None and clf.cv_auroc > 0.9
    p = scored.p_informative
    assert p.shape == (len(ids),) and np.all((p >= 0) & (p <= 1))
    assert np.all((p[-6:] > 0.5) == (y[-6:] == 1))  # the unlabelled ones are right too
    assert "cross-validated AUROC" in clf.summary()


def test_most_uncertain_picks_unlabelled_patches_nearest_one_half():
    p = np.array([0.1, 0.52, 0.9, 0.45, 0.5, 0.7])
    labelled = np.array([False, False, False, False, True, False])
    assert most_uncertain(p, labelled, k=3).tolist() == [1, 3, 5]


def test_mixed_patch_sizes_are_handled(tmp_path):
    rng = np.random.default_rng(5)
    from _quality_helpers import textured_patch, uniform_patch

    patches = [textured_patch(rng, (64, 64)) if i % 2 else uniform_patch(rng, (64, 64)) for i in range(12)]
    patches += [textured_patch(rng, (64, 40)), uniform_patch(rng, (40, 64))]  # edge patches
    ids = write_export(tmp_path, patches)
    ps = PatchSet.from_export(tmp_path)
    assert min(map(tuple, ps.sizes().tolist())) == (40, 64)
    labels = {pid: ("informative" if i % 2 else "uninformative") for i, pid in enumerate(ids[:12])}
    for model in ("rf", "encoder"):
        X, _info = compute_features(model, ps.patches(), encoder_size=64)
        assert X.shape[0] == 14 and np.isfinite(X).all()
        p = score_patches(ps, labels, model=model, features=X).p_informative
        assert p[12] > 0.5 > p[13], model


def test_bad_export_folders(tmp_path):
    with pytest.raises(ValueError, match="no manifest.csv"):
        PatchSet.from_export(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        PatchSet.from_export(tmp_path / "nowhere")
    ids = write_export(tmp_path, [np.zeros((32, 32), np.uint8)] * 3)
    (tmp_path / "patches" / f"{ids[1]}.tif").unlink()
    with pytest.raises(ValueError, match="1 of the 3 patches .* are missing"):
        PatchSet.from_export(tmp_path)
    import tifffile

    tifffile.imwrite(tmp_path / "patches" / f"{ids[1]}.tif", np.zeros((20, 32), np.uint8))
    ps = PatchSet.from_export(tmp_path)
    with pytest.raises(ValueError, match="manifest says uint8 32 x 32"):
        ps.patches()


def test_encoder_loads_a_state_dict_file_and_refuses_a_wrong_one(tmp_path):
    import segmentation_models_pytorch as smp
    import torch

    from napari_cem.quality.classifiers import build_encoder

    torch.manual_seed(3)
    enc = smp.encoders.get_encoder("resnet50", in_channels=1, depth=5, weights=None)
    torch.save({"state_dict": {f"encoder.{k}": v for k, v in enc.state_dict().items()},
                "norms": [0.5, 0.2]}, tmp_path / "w.pth")
    loaded, origin = build_encoder(tmp_path / "w.pth")
    assert origin["layout"] == "smp" and origin["n_tensors_loaded"] == origin["n_encoder_tensors"] > 200
    assert origin["norms"] == [0.5, 0.2]
    assert torch.equal(loaded.conv1.weight, enc.conv1.weight)
    random_enc, random_origin = build_encoder(None)
    assert random_origin["name"] == "random" and "no pre-trained" in random_origin["description"]
    assert not torch.equal(random_enc.conv1.weight, enc.conv1.weight)
    torch.save({"conv1.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError):
        build_encoder(tmp_path / "bad.pth")


def _vnc_subset(vnc_dir, n_uninf=16, n_inf=32, seed=0):
    import tifffile

    with open(LABELS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    uninf = [r for r in rows if r["label"] == "uninformative"]
    inf = [r for r in rows if r["label"] == "informative"]
    pick = [uninf[i] for i in rng.choice(len(uninf), n_uninf, replace=False)]
    pick += [inf[i] for i in rng.choice(len(inf), n_inf, replace=False)]
    stacks = {n: tifffile.imread(vnc_dir / n) for n in {r["stack"] for r in pick}}
    patches = [crop_labelled(stacks, r) for r in pick]
    y = np.array([r["label"] == "informative" for r in pick], int)
    return patches, y


def test_committed_labels_are_real_and_sizeable():
    with open(LABELS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 400
    assert {r["stack"] for r in rows} == {"stack1_image.tif", "stack2_image.tif"}
    labels = [r["label"] for r in rows]
    assert labels.count("uninformative") >= 40 and labels.count("informative") >= 200


@pytest.mark.slow
@pytest.mark.parametrize("model", ["rf", "encoder"])
def test_classifier_beats_chance_on_the_committed_vnc_labels(vnc_dir, model):
    from sklearn.metrics import roc_auc_score

    patches, y = _vnc_subset(vnc_dir)
    X, _info = compute_features(model, patches, encoder_size=112)
    rng = np.random.default_rng(1)
    train = np.zeros(len(y), bool)
    for k in (0, 1):  # stratified half split
        idx = np.flatnonzero(y == k)
        train[rng.choice(idx, len(idx) // 2, replace=False)] = True
    clf = fit_classifier(model, X[train], y[train])
    auroc = roc_auc_score(y[~train], clf.predict_proba(X[~train]))
    assert auroc > 0.8, auroc


def test_encoder_weights_holding_code_are_refused_in_our_words(tmp_path):
    """The Label-patches widget's encoder weights go through the same safe loader."""
    from pathlib import PurePosixPath

    import torch

    from napari_cem.quality.classifiers import compute_features

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": PurePosixPath("/")}, evil)
    patches = [np.zeros((32, 32), np.uint8)] * 2
    with pytest.raises(ValueError, match="not a weights file napari-cem can load safely") as refused:
        compute_features("encoder", patches, encoder_weights=evil, device="cpu")
    assert "weights_only" not in str(refused.value)
