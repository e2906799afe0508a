"""Pretrain a K-view self-supervised method.

    python main_pretrain.py --config-name mv_simclr_k4_cifar100lt
    python main_pretrain.py --config-name quickstart_digits max_epochs=2

Configs live in scripts/pretrain/ (solo-learn's keys, see the README); any key can be overridden
on the command line in Hydra's ``key=value`` form.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from solo_multiview.cli import prepare_or_exit
from solo_multiview.training.pretrain import fit, prepare_pretrain, summary


@hydra.main(version_base="1.2", config_path="scripts/pretrain", config_name=None)
def main(cfg: DictConfig) -> None:
    OmegaConf.set_struct(cfg, False)
    run = prepare_or_exit(prepare_pretrain, cfg)
    print(summary(fit(run)))


if __name__ == "__main__":
    main()
