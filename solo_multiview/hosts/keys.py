"""The config keys the hosts own (solo-learn's names): ``host``, ``momentum``, ``knn_eval``,
``performance``. The backbone's keys live in ``hosts/backbones.py``, the optimizer's and the
schedule's in ``hosts/optim.py``."""

from __future__ import annotations

from dataclasses import dataclass

from solo_multiview.config.schema import setting

HOSTS = ("auto", "solo", "builtin")
#: top-level ``host`` key
HOST_KEY = ("host", str, setting("auto", "solo-learn's base classes (solo), the built-in ones "
                                 "(builtin), or solo when importable (auto)", choices=HOSTS))


@dataclass
class MomentumConfig:
    """``momentum.*`` of methods with an EMA target: tau follows solo-learn's cosine schedule
    from ``base_tau`` to ``final_tau`` over the run (constant when they are equal). A method
    with other defaults declares a subclass (mttv: 0.9 constant)."""

    base_tau: float = setting(0.99, "EMA coefficient at the start", minimum=0, maximum=1)
    final_tau: float = setting(1.0, "EMA coefficient at the end", minimum=0, maximum=1)
    classifier: bool = setting(False, "an online classifier on the momentum backbone too")


@dataclass
class KnnEvalConfig:
    """``knn_eval.*``: the online kNN monitor on the validation set."""

    enabled: bool = setting(False, "run the online kNN monitor")
    k: int = setting(20, "neighbours", minimum=1)
    temperature: float = setting(0.07, "softmax temperature of the votes", above=0)
    distance_func: str = setting("euclidean", "solo-learn's kNN distance (ours is cosine)",
                                 unused=True)


@dataclass
class PerformanceConfig:
    disable_channel_last: bool = setting(False, "keep the model in NCHW memory format")
