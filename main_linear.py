"""Linear probe of a pretrained (frozen) backbone, with long-tail metrics.

    python main_linear.py --config-name cifar100lt \
        pretrained_feature_extractor=trained_models/mv_simclr/<version>
    python main_linear.py --config-name quickstart_digits \
        pretrained_feature_extractor=trained_models/mv_simclr/<version> train_set=longtail
    python main_linear.py --config-name cifar10lt pretrained_feature_extractor=... \
        train_set=10 probe.mode=augmented
    python main_linear.py --config-name cifar10lt --keys   # every key: type, default, help

Configs live in scripts/linear/ (kNN configs, knn_*.yaml, sit beside them for main_knn.py). The
checkpoint is a .ckpt file or a pretraining run folder (its newest .ckpt) with args.json beside
it. Results go to <checkpoint folder>/eval/linear-<train set>/ (results.json, per_class.csv,
per_class.png) unless results.dir / results.name say otherwise.
The checkpoint path may be pasted as the pretraining prints it
(``pretrained_feature_extractor=trained_models/mv_simclr/<version>/...-ep=14.ckpt``): path-valued
keys are quoted for Hydra before it parses the command line (``cli.quote_path_overrides``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from solo_multiview.cli import prepare_argv, prepare_or_exit
from solo_multiview.eval.eval_config import EVAL_PATH_KEYS, schema_for
from solo_multiview.eval.prepare import prepare_eval
from solo_multiview.eval.run_linear import evaluate_linear


@hydra.main(version_base="1.2", config_path="scripts/linear", config_name=None)
def main(cfg: DictConfig) -> None:
    OmegaConf.set_struct(cfg, False)
    prepared = prepare_or_exit(prepare_eval, cfg, "linear")
    evaluate_linear(prepared)


if __name__ == "__main__":
    prepare_argv(schema_for("linear"), EVAL_PATH_KEYS)  # --keys; quoted paths
    main()
