"""Pretrain a K-view self-supervised method.

    python main_pretrain.py --config-name mv_simclr_k4_cifar100lt
    python main_pretrain.py --config-name quickstart_digits max_epochs=2
    python main_pretrain.py --config-name quickstart_digits --keys    # every key, with help

Configs live in scripts/pretrain/ and the generated presets (``training/presets.py``); any key can
be overridden on the command line in Hydra's ``key=value`` form. The config is checked against
the declared schema before anything is read or written (``config/pretrain.py``).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from solo_multiview.cli import prepare_or_exit, quote_path_overrides
from solo_multiview.config.keys import keys_flag, text_table
from solo_multiview.config.pretrain import method_of
from solo_multiview.config.schema import describe
from solo_multiview.losses.mttv import OfficialFormError
from solo_multiview.training.keys import pretrain_schema
from solo_multiview.training.presets import register_presets
from solo_multiview.training.pretrain import fit, prepare_pretrain, summary

#: keys whose values are paths: quoted for Hydra's grammar, so a path with '=' can be pasted
PATH_KEYS = ("resume_from_checkpoint", "data.train_path", "data.val_path",
             "data.val_split_file", "data.long_tail.index_file", "data.long_tail.split_file",
             "checkpoint.dir")
LIST_KEYS = keys_flag(sys.argv)
sys.argv[1:] = quote_path_overrides(sys.argv[1:], PATH_KEYS)
register_presets()


def list_keys(cfg: DictConfig) -> str:
    return text_table(describe(pretrain_schema(method_of(cfg))))


@hydra.main(version_base="1.2", config_path="scripts/pretrain", config_name=None)
def main(cfg: DictConfig) -> None:
    OmegaConf.set_struct(cfg, False)
    if LIST_KEYS:
        print(prepare_or_exit(list_keys, cfg))
        return
    run = prepare_or_exit(prepare_pretrain, cfg)
    try:
        result = fit(run)
    except OfficialFormError as error:  # the official MTTV loss is undefined at this step
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(summary(result))


if __name__ == "__main__":
    main()
