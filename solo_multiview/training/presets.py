"""Pretraining presets generated from one place: ``<method>_k<K>_<dataset>``.

The per-dataset configs of a method differ only in their name, K and the data file, so they are
not files: for every registered method that has a base config
``scripts/pretrain/base/<method>_cifar.yaml`` (its hyper-parameters and augmentation), and for
every K of the method's ``preset_views``, this module registers in Hydra's ConfigStore

    <method>_k<K>_cifar10lt   and   <method>_k<K>_cifar100lt
    mimv_<method>_cifar10lt   and   mimv_<method>_cifar100lt      (MIMV views, K = 1 pair)

(trainer settings + the base config + ``data: cifar10lt | cifar100lt`` + ``num_views: K``), so
``python main_pretrain.py --config-name mv_simclr_k4_cifar100lt`` works as if the file existed.
Hand-written configs in scripts/pretrain/ (the quickstarts, mttv's presets, whose batch sizes
differ) take the names they have. ``python -m solo_multiview.training.presets`` lists the names.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Dict, List

from hydra.core.config_store import ConfigStore

PRETRAIN_CONFIGS = Path(__file__).resolve().parents[2] / "scripts" / "pretrain"
DATASETS = ("cifar10lt", "cifar100lt")


def _node(name: str, dataset: str, run_name: str, method_kwargs: dict) -> dict:
    return {
        "defaults": [
            "base/trainer@_here_",
            f"base/{name}_cifar@_here_",
            {"data": dataset},
            "_self_",
            {"override hydra/hydra_logging": "disabled"},
            {"override hydra/job_logging": "disabled"},
        ],
        "name": run_name,
        "method_kwargs": method_kwargs,
    }


def preset_nodes() -> Dict[str, dict]:
    """Name -> config node of every generated preset: ``<method>_k<K>_<dataset>`` for each K of
    the method's ``preset_views``, and ``mimv_<method>_<dataset>`` (the paper's multi-image
    views, one partner per anchor) for the methods whose keys have the ``mimv`` switch."""
    from solo_multiview.methods import METHODS

    nodes: Dict[str, dict] = {}
    for name, method in sorted(METHODS.items()):
        if not (PRETRAIN_CONFIGS / "base" / f"{name}_cifar.yaml").is_file():
            continue
        for dataset in DATASETS:
            for k in method.preset_views:
                nodes[f"{name}_k{k}_{dataset}"] = _node(name, dataset, f"{name}-k{k}-{dataset}",
                                                        {"num_views": k})
            if "mimv" in {f.name for f in dataclasses.fields(method.Kwargs)}:
                nodes[f"mimv_{name}_{dataset}"] = _node(
                    name, dataset, f"mimv-{name}-{dataset}",
                    {"num_views": 1, "mimv": {"enabled": True}})
    return nodes


@functools.lru_cache(maxsize=1)
def register_presets() -> List[str]:
    """Registers the presets in Hydra's ConfigStore (once); returns their names."""
    store = ConfigStore.instance()
    nodes = preset_nodes()
    for name, node in nodes.items():
        if (PRETRAIN_CONFIGS / f"{name}.yaml").is_file():
            continue  # a hand-written config of that name wins
        store.store(name=name, node=node)
    return sorted(nodes)


def config_names() -> List[str]:
    """Every pretraining config name: the files of scripts/pretrain/ and the presets."""
    files = [p.stem for p in PRETRAIN_CONFIGS.glob("*.yaml")]
    return sorted(set(files) | set(register_presets()))


if __name__ == "__main__":
    print("\n".join(config_names()))
