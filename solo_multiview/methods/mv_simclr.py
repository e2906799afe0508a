"""mv_simclr: SimCLR with K >= 2 views (multi-positive NT-Xent)."""

from __future__ import annotations

from typing import Any, Sequence

import omegaconf
import torch

from solo_multiview.hosts.contract import BaseMethod
from solo_multiview.losses.mv_simclr import mv_nt_xent
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import (
    add_filter_defaults,
    check_num_large_crops,
    filter_band,
    number_above,
    require,
    require_positive_ints,
)
from solo_multiview.methods.projection import ProjectorOutputs


class MVSimCLR(ProjectorOutputs, BaseMethod):
    """K-view SimCLR (https://arxiv.org/abs/2002.05709 generalised to K views).

    Every crop of an image is a positive of every other crop of that image; every crop of every
    other image in the global batch is a negative. Loss (``losses/mv_simclr.py``): for each
    crop i with positives P(i),

        l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / t) / sum_{a != i} exp(s_ia / t) )

    averaged over all crops (SupCon's L_out form); exactly NT-Xent at K = 2 and its scale does
    not grow with K. All K large crops go through the backbone in one call.

    Extra cfg settings:
        method_kwargs:
            proj_hidden_dim (int): hidden width of the projector.
            proj_output_dim (int): output width of the projector.
            temperature (float): softmax temperature t > 0.
            filter: the extreme-feature band filter (``methods/options.py``), off by default.
    """

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.temperature: float = kwargs.temperature
        self.band = filter_band(cfg)
        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, kwargs.proj_output_dim,
                             num_layers=2, batch_norm=False)

    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        cfg = super().add_and_assert_specific_cfg(cfg)
        require_positive_ints(cfg, "proj_hidden_dim", "proj_output_dim")
        require(cfg, "method_kwargs.temperature", number_above(0.0), "a number > 0")
        check_num_large_crops(cfg, "mv_simclr")
        return add_filter_defaults(cfg)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        indexes = batch[0]
        out = super().training_step(batch, batch_idx)
        z = torch.cat(out["z"])
        crop_indexes = indexes.repeat(len(out["z"]))
        nce_loss, stats = mv_nt_xent(z, crop_indexes, self.temperature, band=self.band)
        self.log("train_nce_loss", nce_loss, on_epoch=True, sync_dist=True)
        if self.band is not None:
            self.log("train_filtered_fraction", stats["filtered_fraction"], on_epoch=True,
                     sync_dist=True)
        return nce_loss + out["loss"]
