"""The weighted-kNN evaluation behind ``main_knn.py``.

1. ``prepare_eval`` (config, checkpoint, frozen backbone, data; nothing written).
2. Unaugmented features of the memory bank (the ``train_set`` images) and of the balanced test
   set, cached in ``<results.dir>/feature_cache`` (shared with the linear probe).
3. ``knn.knn_scores`` (cosine similarity, the ``knn.k`` nearest bank entries, weights
   ``exp(s / knn.temperature)``); ``metrics.long_tail_report`` with the pretraining set's class
   counts (both grouping rules); ``report.write_results``.
"""

from __future__ import annotations

from typing import Callable

import omegaconf

from .knn import knn_scores
from .metrics import long_tail_report
from .prepare import EvalResult, PreparedEval, base_settings, finish, prepare_eval, split_features


def evaluate_knn(prep: PreparedEval) -> EvalResult:
    """Steps 2-3 of the module docstring on a prepared evaluation."""
    cfg = prep.cfg
    bank = split_features(prep, "train")
    test = split_features(prep, "test")
    k, temperature = int(cfg.knn.k), float(cfg.knn.temperature)
    scores = knn_scores(bank.features.to(prep.device), bank.labels, test.features.to(prep.device),
                        num_classes=prep.data.num_classes, k=k, temperature=temperature).cpu()
    report = long_tail_report(scores, test.labels, prep.data.pretrain_counts)
    settings = base_settings(prep, {"train": bank, "test": test})
    settings["knn"] = {"k": k, "k_used": min(k, len(bank.labels)), "temperature": temperature,
                       "distance": "cosine"}
    title = (f"weighted kNN (k={k}, T={temperature:g}, bank {settings['train_set']}, "
             f"{len(prep.data.train)} images) on {prep.checkpoint.name}")
    return finish(prep, report, settings, title)


def run_knn(cfg: omegaconf.DictConfig, log: Callable[[str], None] = print) -> EvalResult:
    """``prepare_eval(cfg, "knn")`` then ``evaluate_knn``."""
    return evaluate_knn(prepare_eval(cfg, "knn", log))
