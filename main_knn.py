"""Weighted k-nearest-neighbour evaluation of a pretrained (frozen) backbone, with long-tail
metrics.

    python main_knn.py --config-name knn_cifar100lt \
        pretrained_feature_extractor=trained_models/mv_simclr/<version>
    python main_knn.py --config-name knn_quickstart_digits \
        pretrained_feature_extractor=trained_models/mv_simclr/<version> knn.k=20 train_set=longtail
    python main_knn.py --config-name knn_cifar10lt --keys   # every key: type, default, help

Configs are the knn_*.yaml files in scripts/linear/ (they share the data files with the linear
configs). The memory bank is the train_set images (balanced | longtail | N per class); results
go to <checkpoint folder>/eval/knn-<train set>-k<k>-t<T>/ unless results.dir / results.name say
otherwise. Features are cached in <results.dir>/feature_cache and shared with main_linear.py.
The checkpoint path may be pasted as the pretraining prints it (``...-ep=14.ckpt``): path-valued
keys are quoted for Hydra before it parses the command line (``cli.quote_path_overrides``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from solo_multiview.cli import prepare_argv, prepare_or_exit
from solo_multiview.eval.eval_config import EVAL_PATH_KEYS, schema_for
from solo_multiview.eval.prepare import prepare_eval
from solo_multiview.eval.run_knn import evaluate_knn


@hydra.main(version_base="1.2", config_path="scripts/linear", config_name=None)
def main(cfg: DictConfig) -> None:
    OmegaConf.set_struct(cfg, False)
    prepared = prepare_or_exit(prepare_eval, cfg, "knn")
    evaluate_knn(prepared)


if __name__ == "__main__":
    prepare_argv(schema_for("knn"), EVAL_PATH_KEYS)  # --keys; quoted paths
    main()
