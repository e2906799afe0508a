"""Evaluation core: long-tail metrics and grouping, weighted kNN, linear probe, feature extraction,
results folders and pretrained-checkpoint loading; and the evaluation runs behind main_linear.py
and main_knn.py (config validation, probe data, feature cache, augmented probe)."""

from .augmented_probe import augmentation_transform, train_augmented_probe
from .checkpoint import (
    backbone_state_dict,
    check_backbone_config,
    find_checkpoint,
    load_args,
    load_pretrained_backbone,
)
from .eval_config import parse_eval_cfg, parse_train_set
from .feature_cache import Features, cached_features, feature_key
from .features import extract_features
from .groups import (
    GROUP_NAMES,
    RULES,
    Grouping,
    frequency_order,
    group_classes,
    thirds_groups,
    threshold_groups,
)
from .knn import knn_scores
from .linear import LinearProbe, LinearProbeConfig, train_linear_probe
from .metrics import (
    flatten_report,
    group_accuracies,
    long_tail_report,
    per_class_accuracy,
    topk_accuracy,
)
from .prepare import EvalResult, PreparedEval, prepare_eval
from .probe_data import EvalData, build_eval_data
from .report import atomic_write, plot_per_class, summary_table, write_results
from .run_knn import evaluate_knn, run_knn
from .run_linear import evaluate_linear, run_linear

__all__ = [
    "GROUP_NAMES",
    "RULES",
    "EvalData",
    "EvalResult",
    "Features",
    "Grouping",
    "LinearProbe",
    "LinearProbeConfig",
    "PreparedEval",
    "atomic_write",
    "augmentation_transform",
    "backbone_state_dict",
    "build_eval_data",
    "cached_features",
    "check_backbone_config",
    "evaluate_knn",
    "evaluate_linear",
    "extract_features",
    "feature_key",
    "find_checkpoint",
    "flatten_report",
    "frequency_order",
    "group_accuracies",
    "group_classes",
    "knn_scores",
    "load_args",
    "load_pretrained_backbone",
    "long_tail_report",
    "parse_eval_cfg",
    "parse_train_set",
    "per_class_accuracy",
    "plot_per_class",
    "prepare_eval",
    "run_knn",
    "run_linear",
    "summary_table",
    "thirds_groups",
    "threshold_groups",
    "topk_accuracy",
    "train_augmented_probe",
    "train_linear_probe",
    "write_results",
]
