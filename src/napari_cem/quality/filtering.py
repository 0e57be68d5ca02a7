"""Keep the informative patches: train on the labels, score every patch, write the kept ones.

The filtered folder has the layout of a curation export (``patches/`` of uint8 TIFFs and
``manifest.csv`` with MANIFEST_COLUMNS), plus a ``p_informative`` column, and
``filter.json`` with the classifier, threshold and counts. Its manifest lists only the kept
patches (every row has exemplar=1 and a file), so the folder can be opened, labelled or
filtered again like any export. Written in the export's safe order: the TIFFs first, then
the manifest atomically, so an interruption never leaves a manifest naming a missing file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import write_text_atomic
from .._cancel import Cancelled
from .._progress import Progress, staged
from ..curate import MANIFEST_COLUMNS
from .labels import INFORMATIVE, LabelStore
from .patchset import PatchSet

__all__ = ["FILTER_COLUMNS", "ScoredPatches", "filter_export", "labelled_targets", "score_patches",
           "write_filtered"]

FILTER_COLUMNS = (*MANIFEST_COLUMNS, "p_informative")



def labelled_targets(patchset: PatchSet, labels) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, y) of the patches of *patchset* that *labels* (store or dict) labels."""
    mapping = labels.as_dict() if isinstance(labels, LabelStore) else dict(labels)
    index = {pid: i for i, pid in enumerate(patchset.ids)}
    rows, y = [], []
    for pid, label in mapping.items():
        i = index.get(pid)
        if i is not None:
            rows.append(i)
            y.append(1 if label == INFORMATIVE else 0)
    return np.asarray(rows, int), np.asarray(y, int)


@dataclass
class ScoredPatches:
    classifier: object  # QualityClassifier
    p_informative: np.ndarray  # one per patch of the set
    features: np.ndarray


def score_patches(patchset: PatchSet, labels, *, model: str = "rf", encoder_weights=None,
                  device="auto", n_jobs: int = 1, encoder_size: int = 224, features=None,
                  progress: Progress | None = None, should_stop=None) -> ScoredPatches:
    """Features of every patch, a classifier trained on the labelled ones, P(informative) of all.

    Label problems (fewer than 10, one class only) raise ValueError *before* any feature is
    computed. ``features`` may pass features computed earlier for the same set and model.
    """
    from .classifiers import check_training_labels, compute_features, fit_classifier

    rows, y = labelled_targets(patchset, labels)
    check_training_labels(y)
    info = {}
    if features is None:
        features, info = compute_features(model, patchset.patches(), encoder_weights=encoder_weights,
                                          device=device, n_jobs=n_jobs, encoder_size=encoder_size,
                                          progress=staged(progress, "features"), should_stop=should_stop)
    if should_stop is not None and should_stop():
        raise Cancelled("training was cancelled")
    if progress is not None:
        progress(0, 1, "training")
    clf = fit_classifier(model, features[rows], y, info=info)
    p = clf.predict_proba(features)
    if progress is not None:
        progress(1, 1, "training")
    return ScoredPatches(clf, p, features)


def write_filtered(patchset: PatchSet, p_informative, threshold: float, out_dir, *,
                   record: dict | None = None, progress: Progress | None = None,
                   should_stop=None) -> dict:
    """Write the patches with ``p_informative > threshold`` to *out_dir*; returns a summary."""
    p = np.asarray(p_informative, float)
    if len(p) != len(patchset):
        raise ValueError(f"{len(p)} probabilities for {len(patchset)} patches")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"the threshold must be between 0 and 1, got {threshold}")
    out_dir = Path(out_dir)
    if patchset.folder is not None and out_dir.resolve() == patchset.folder.resolve():
        raise ValueError("write the informative patches to a new folder, not over the export they come from")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    old_manifest = out_dir / "manifest.csv"
    if old_manifest.exists() and not (out_dir / "filter.json").exists():
        raise ValueError(f"{out_dir} already holds an export that is not a filtered one; choose an "
                         "empty or new folder")
    from ..export import read_manifest

    old_ids = set()
    if old_manifest.exists():
        from .patchset import manifest_patch_ids

        old_ids = set(manifest_patch_ids(read_manifest(old_manifest), old_manifest))
    keep = np.flatnonzero(p > float(threshold))
    patches_dir = out_dir / "patches"
    patches_dir.mkdir(parents=True, exist_ok=True)
    for n, i in enumerate(keep, start=1):
        patchset.write_patch(int(i), patches_dir / f"{patchset.ids[i]}.tif")
        if progress is not None and (n % 64 == 0 or n == len(keep)):
            progress(n, len(keep), "writing")
        if should_stop is not None and n % 64 == 0 and should_stop():
            raise Cancelled("writing the informative patches was cancelled")
    lines = [",".join(FILTER_COLUMNS)]
    for i in keep:
        row = patchset.rows[i]
        values = [row[c] for c in MANIFEST_COLUMNS]
        lines.append(",".join(str(v) for v in values) + f",{p[i]:.6f}")
    summary = {"n_patches": len(p), "n_kept": len(keep), "n_dropped": int(len(p) - len(keep)),
               "threshold": float(threshold), "source": patchset.description, **(record or {})}
    write_text_atomic(out_dir / "filter.json", json.dumps(summary, indent=1))
    write_text_atomic(out_dir / "manifest.csv", "\n".join(lines) + "\n")
    for stale in old_ids - {patchset.ids[i] for i in keep}:  # files of an earlier filter run
        (patches_dir / f"{stale}.tif").unlink(missing_ok=True)
    summary["out_dir"] = str(out_dir)
    return summary


def filter_export(export_dir, labels_path, out_dir, *, model: str = "rf", threshold: float = 0.5,
                  encoder_weights=None, device="auto", n_jobs: int = 1, encoder_size: int = 224,
                  progress: Progress | None = None, should_stop=None) -> dict:
    """The whole step headless: read the export and labels, train, score, write the kept ones."""
    patchset = PatchSet.from_export(export_dir)
    labels_path = Path(labels_path)
    if not labels_path.exists():
        raise ValueError(f"labels file not found: {labels_path}")
    store = LabelStore(labels_path, autosave=False)
    rows, _y = labelled_targets(patchset, store)
    if len(store) and not len(rows):
        raise ValueError(f"none of the {len(store)} labels in {labels_path} names a patch of {export_dir}")
    scored = score_patches(patchset, store, model=model, encoder_weights=encoder_weights, device=device,
                           n_jobs=n_jobs, encoder_size=encoder_size, progress=progress,
                           should_stop=should_stop)
    clf = scored.classifier
    record = {"model": clf.model, "cv_auroc": clf.cv_auroc, "n_informative_labels": clf.n_informative,
              "n_uninformative_labels": clf.n_uninformative, "labels": str(labels_path),
              "encoder": clf.info.get("description")}
    summary = write_filtered(patchset, scored.p_informative, threshold, out_dir, record=record,
                             progress=progress, should_stop=should_stop)
    summary["label_problems"] = list(store.problems)
    return summary
