"""mv_simclr: SimCLR with K >= 2 views (multi-positive NT-Xent)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch
import torch.nn.functional as F

from solo_multiview.config.schema import section, setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.mv_simclr import mv_nt_xent
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import FilterKwargs, band_filter


@dataclass
class MVSimCLRKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector", minimum=1)
    temperature: float = setting(help="softmax temperature t", above=0)
    filter: FilterKwargs = section(FilterKwargs, "the extreme-feature band filter (off)")


def nt_xent_two_view(method: Any, out: Dict[str, Any], batch: Sequence[Any]) -> torch.Tensor:
    """NT-Xent (SimCLR) of two views written as a 2B-way classification: the declared K = 2
    reference (no filter, one process)."""
    z = F.normalize(torch.cat(out["z"][:2]), dim=-1)
    n = z.shape[0] // 2
    logits = (z @ z.T / method.temperature).fill_diagonal_(float("-inf"))
    target = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    return F.cross_entropy(logits, target)


class MVSimCLR(KViewMethod):
    """K-view SimCLR (https://arxiv.org/abs/2002.05709 generalised to K views).

    Every crop of an image is a positive of every other crop of that image; every crop of every
    other image in the global batch is a negative. Loss (``losses/mv_simclr.py``): for each
    crop i with positives P(i),

        l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / t) / sum_{a != i} exp(s_ia / t) )

    averaged over all crops (SupCon's L_out form); exactly NT-Xent at K = 2 and its scale does
    not grow with K. All K large crops go through the backbone in one call.

    Keys: :class:`MVSimCLRKwargs` (``method_kwargs``).
    """

    loss_name = "nce"
    two_view_reference = nt_xent_two_view
    Kwargs = MVSimCLRKwargs

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.temperature: float = kwargs.temperature
        self.band = band_filter(kwargs.filter)
        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, kwargs.proj_output_dim,
                             num_layers=2, batch_norm=False)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        z = torch.cat(out["z"])
        # crop-major: crop k of every sample (an image, or an (anchor, partner) pair under MIMV)
        crop_indexes = out["indexes"].repeat(len(out["z"]))
        loss, stats = mv_nt_xent(z, crop_indexes, self.temperature, band=self.band)
        return loss, ({"filtered_fraction": stats["filtered_fraction"]} if self.band else {})

