"""Informative / uninformative classifiers learned from the user's labels (SPEC 2).

Two models, both ending in a scikit-learn estimator with balanced class weights:

* ``"rf"`` -- the paper's light model: a random forest (100 trees, max depth 8, balanced
  class weights) on the four hand-made features of ``quality.features``.
* ``"encoder"`` -- a ResNet50 encoder's globally average-pooled feature maps (its four
  stages, 3,840 numbers per patch) and an L2-regularised logistic regression. With
  ``encoder_weights`` (a released name or a checkpoint file: CEM500K MoCoV2, CEM1.5M SwAV,
  torchvision or smp layout, loaded through ``napari_cem.weights``) it uses the pre-trained
  encoder; without, a *randomly initialised* ResNet50 (fixed seed): random convolutional
  features are an honest no-download baseline, not a pre-trained model. Runs in batches on
  the best device (CUDA, MPS, CPU), with autocast and channels_last where they pay.

Labels are encoded 1 = informative, 0 = uninformative; every probability returned is
P(informative). torch and scikit-learn are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._cancel import Cancelled, stoppable

__all__ = [
    "MIN_LABELS",
    "MODELS",
    "QualityClassifier",
    "check_training_labels",
    "compute_features",
    "cross_validated_auroc",
    "encoder_features",
    "fit_classifier",
    "most_uncertain",
]

MODELS = ("rf", "encoder")
MIN_LABELS = 10
ENCODER_ARCH = "resnet50"
DEFAULT_NORMS = (0.58, 0.10)  # CEM500K's mean/std (SPEC); used when the weights carry none
ENCODER_STAGES = (2, 3, 4, 5)  # smp encoder outputs pooled: layer1..layer4


def _check_model(model: str) -> str:
    model = str(model).lower()
    if model not in MODELS:
        raise ValueError(f"unknown classifier {model!r}: choose 'rf' (random forest on four "
                         "features) or 'encoder' (ResNet50 features + logistic regression)")
    return model


# -- features --------------------------------------------------------------------------------
class _EncoderHolder:
    """An object with ``.encoder`` (what napari_cem.weights.load_encoder_weights expects)."""

    def __init__(self, encoder):
        self.encoder = encoder


def build_encoder(encoder_weights=None, seed: int = 0):
    """(smp ResNet50 encoder in eval mode, origin dict with 'norms')."""
    import segmentation_models_pytorch as smp
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        encoder = smp.encoders.get_encoder(ENCODER_ARCH, in_channels=1, depth=5, weights=None)
    if encoder_weights is None or str(encoder_weights).strip().lower() in ("", "none"):
        origin = {"name": "random", "path": None, "layout": "none", "norms": list(DEFAULT_NORMS),
                  "description": f"randomly initialised {ENCODER_ARCH} (seed {seed}); no pre-trained weights"}
    else:
        from ..weights import load_encoder_weights

        origin = load_encoder_weights(_EncoderHolder(encoder), encoder_weights)
        origin["description"] = f"{ENCODER_ARCH} with weights {origin['name']} ({origin['layout']})"
        if origin.get("norms") is None:
            origin["norms"] = list(DEFAULT_NORMS)
    encoder.eval()
    return encoder, origin


def encoder_features(patches, *, encoder_weights=None, device="auto", batch_size: int = 32,
                     size: int = 224, seed: int = 0, encoder=None,
                     progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, dict]:
    """(n, 3840) float32 pooled ResNet50 features of uint8 patches, and the encoder's origin.

    Patches of another size than *size* are resized to it (bilinear), as dHash does with
    partial edge patches. ``encoder`` may be a ``build_encoder()`` result to reuse.
    """
    import torch
    import torch.nn.functional as F

    from ..device import autocast_policy, describe_device, select_device

    n = len(patches)
    encoder, origin = encoder if encoder is not None else build_encoder(encoder_weights, seed)
    dev = select_device(device)
    info = describe_device(dev)
    channels_last = dev.type in ("cuda", "cpu")
    precision = autocast_policy(dev, "auto", "inference", info)
    encoder = encoder.to(dev)
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    mean, std = (float(v) for v in origin["norms"])
    out = None
    done = 0
    with torch.inference_mode():
        for start in range(0, n, int(batch_size)):
            if should_stop is not None and should_stop():
                raise Cancelled("computing the encoder features was cancelled")
            chunk = []
            for p in patches[start:start + int(batch_size)]:
                p = np.asarray(p)
                if p.ndim != 2 or p.dtype != np.uint8:
                    raise ValueError(f"patches must be 2D uint8 images, got {p.dtype} {p.shape}")
                t = torch.from_numpy(np.ascontiguousarray(p)).float()[None, None]
                if p.shape != (size, size):
                    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
                chunk.append(t)
            x = torch.cat(chunk).to(dev, non_blocking=True)
            x = (x / 255.0 - mean) / std
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with stoppable(encoder, should_stop), precision.autocast(dev.type):
                feats = encoder(x)  # Stop lands inside it too: a batch is seconds on a CPU
            pooled = torch.cat([feats[i].float().mean(dim=(2, 3)) for i in ENCODER_STAGES], dim=1)
            pooled = pooled.cpu().numpy()
            if out is None:
                out = np.empty((n, pooled.shape[1]), np.float32)
            out[start:start + len(pooled)] = pooled
            done += len(pooled)
            if progress is not None:
                progress(done, n)
    if out is None:
        out = np.zeros((0, 0), np.float32)
    origin = dict(origin, device=str(info), amp=precision.name)
    return out, origin


def compute_features(model: str, patches, *, encoder_weights=None, device="auto", n_jobs: int = 1,
                     batch_size: int = 32, encoder_size: int = 224, progress=None,
                     should_stop=None) -> tuple[np.ndarray, dict]:
    """(features, info) of *patches* for classifier *model* ('rf' or 'encoder').

    ``encoder_size``: the side patches are resized to for the encoder (224, as in CEM500K).
    """
    model = _check_model(model)
    if model == "rf":
        from .features import FEATURE_NAMES, quality_features

        X = quality_features(patches, n_jobs=n_jobs, progress=progress, should_stop=should_stop)
        return X, {"features": list(FEATURE_NAMES)}
    return encoder_features(patches, encoder_weights=encoder_weights, device=device,
                            batch_size=batch_size, size=encoder_size, progress=progress,
                            should_stop=should_stop)


# -- training --------------------------------------------------------------------------------
def check_training_labels(y) -> np.ndarray:
    """*y* as an int array (1 informative, 0 uninformative), or a plain ValueError."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError("labels must be a flat list")
    y = y.astype(int)
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 1 (informative) or 0 (uninformative)")
    n = len(y)
    if n < MIN_LABELS:
        raise ValueError(f"Label at least {MIN_LABELS} patches before training (you have {n}).")
    n_inf = int(y.sum())
    if n_inf == 0 or n_inf == n:
        which, other = ("informative", "uninformative") if n_inf else ("uninformative", "informative")
        raise ValueError(f"All {n} labelled patches are {which}: label some {other} patches too. "
                         "A classifier needs examples of both classes; nothing was trained.")
    return y


def _make_estimator(model: str, seed: int = 0, n_jobs: int = 1):
    if model == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=100, max_depth=8, class_weight="balanced",
                                      random_state=seed, n_jobs=n_jobs)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, class_weight="balanced",
                                                              max_iter=5000))


def cross_validated_auroc(model: str, X, y, *, folds: int = 5, seed: int = 0) -> float | None:
    """Stratified k-fold AUROC of *model*'s estimator on (X, y); None when a class has < 2."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    model = _check_model(model)
    y = check_training_labels(y)
    k = min(int(folds), int(np.bincount(y, minlength=2).min()))
    if k < 2:
        return None
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    p = cross_val_predict(_make_estimator(model, seed), np.asarray(X), y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


@dataclass
class QualityClassifier:
    """A fitted informative/uninformative classifier and what it was trained on."""

    model: str
    estimator: Any
    n_informative: int
    n_uninformative: int
    cv_auroc: float | None = None
    info: dict = field(default_factory=dict)

    def predict_proba(self, X) -> np.ndarray:
        """P(informative) per row of *X* (features from ``compute_features``)."""
        X = np.asarray(X)
        if len(X) == 0:
            return np.zeros(0, np.float64)
        classes = list(self.estimator.classes_)
        return self.estimator.predict_proba(X)[:, classes.index(1)].astype(np.float64)

    def summary(self) -> str:
        auroc = "n/a (too few of one class)" if self.cv_auroc is None else f"{self.cv_auroc:.3f}"
        return (f"{self.model}: trained on {self.n_informative} informative + {self.n_uninformative} "
                f"uninformative labels; cross-validated AUROC {auroc}")


def fit_classifier(model: str, X, y, *, cv: bool = True, folds: int = 5, seed: int = 0,
                   info: dict | None = None) -> QualityClassifier:
    """Fit *model*'s estimator on (X, y) (y: 1 informative, 0 uninformative); CV AUROC too."""
    model = _check_model(model)
    y = check_training_labels(y)
    X = np.asarray(X)
    if len(X) != len(y):
        raise ValueError(f"{len(X)} feature rows for {len(y)} labels")
    auroc = cross_validated_auroc(model, X, y, folds=folds, seed=seed) if cv else None
    estimator = _make_estimator(model, seed).fit(X, y)
    return QualityClassifier(model, estimator, int(y.sum()), int(len(y) - y.sum()), auroc, dict(info or {}))


def most_uncertain(p_informative, labelled, k: int = 64) -> np.ndarray:
    """Indices of the *k* unlabelled patches whose probability is closest to 0.5 (active learning)."""
    p = np.asarray(p_informative, float)
    labelled = np.asarray(labelled, bool)
    candidates = np.flatnonzero(~labelled & np.isfinite(p))
    order = np.argsort(np.abs(p[candidates] - 0.5), kind="stable")
    return candidates[order[:int(k)]]
