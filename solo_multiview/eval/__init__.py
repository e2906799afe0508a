"""Evaluation core: long-tail metrics and grouping, weighted kNN, linear probe, feature extraction,
results folders and pretrained-checkpoint loading."""

from .checkpoint import (
    backbone_state_dict,
    check_backbone_config,
    find_checkpoint,
    load_args,
    load_pretrained_backbone,
)
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
from .report import atomic_write, plot_per_class, summary_table, write_results

__all__ = [
    "GROUP_NAMES",
    "RULES",
    "Grouping",
    "LinearProbe",
    "LinearProbeConfig",
    "atomic_write",
    "backbone_state_dict",
    "check_backbone_config",
    "extract_features",
    "find_checkpoint",
    "flatten_report",
    "frequency_order",
    "group_accuracies",
    "group_classes",
    "knn_scores",
    "load_args",
    "load_pretrained_backbone",
    "long_tail_report",
    "per_class_accuracy",
    "plot_per_class",
    "summary_table",
    "thirds_groups",
    "threshold_groups",
    "topk_accuracy",
    "train_linear_probe",
    "write_results",
]
