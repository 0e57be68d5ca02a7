"""Informative / uninformative patches (SPEC "Informative filter"): features, label store,
classifiers, filtering. Qt-free; torch and scikit-learn are imported lazily."""

from .classifiers import (
    MIN_LABELS,
    MODELS,
    QualityClassifier,
    check_training_labels,
    compute_features,
    cross_validated_auroc,
    encoder_features,
    fit_classifier,
    most_uncertain,
)
from .features import FEATURE_NAMES, quality_features
from .filtering import (
    FILTER_COLUMNS,
    filter_export,
    labelled_targets,
    score_patches,
    write_filtered,
)
from .labels import INFORMATIVE, LABELS_FILE, UNINFORMATIVE, LabelStore
from .patchset import PatchSet, patch_id

__all__ = [
    "FEATURE_NAMES", "FILTER_COLUMNS", "INFORMATIVE", "LABELS_FILE", "MIN_LABELS", "MODELS",
    "UNINFORMATIVE", "LabelStore", "PatchSet", "QualityClassifier", "check_training_labels",
    "compute_features", "cross_validated_auroc", "encoder_features", "filter_export",
    "fit_classifier", "labelled_targets", "most_uncertain", "patch_id", "quality_features",
    "score_patches", "write_filtered",
]
