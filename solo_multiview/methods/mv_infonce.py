"""mv_infonce: MV-InfoNCE (Koromilas et al., arXiv 2507.06979), one InfoNCE term per image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch
from torch import nn

from solo_multiview.config.schema import section, setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.mv_infonce import MV_INFONCE_NEGATIVES, mv_infonce_loss
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import FilterKwargs, band_filter


@dataclass
class MVInfoNCEKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector", minimum=1)
    temperature: float = setting(0.5, "softmax temperature t (default: the authors' CIFAR "
                                 "configs)", above=0)
    negatives: str = setting("cross_view", "the denominator's candidates: every other view of "
                             "every image (cross_view, the paper's formula) or every other "
                             "embedding (all, the authors' code)", choices=MV_INFONCE_NEGATIVES)
    filter: FilterKwargs = section(FilterKwargs, "the extreme-feature band filter (off)")


def authors_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The projector of pakoromilas/Multi-View-CL (``models/encoder.py``, ``EncodeProject``;
    SimCLR's 2-layer head with BN): Linear-BN-ReLU-Linear-BN, the last BN without a shift
    (their ``BatchNorm1dNoBias``: bias frozen at 0). Their linear layers have no bias; here the
    biases are there but each is followed by a BN, which removes it."""
    head = mlp(in_dim, hidden_dim, out_dim, num_layers=2, batch_norm=True, last_batch_norm=True)
    frozen_zero_bias(head[-1])
    return head


def frozen_zero_bias(layer: nn.Module) -> None:
    """Sets ``layer.bias`` to 0 and leaves it out of training (a layer without a bias, keeping
    the ``heads.mlp`` layout)."""
    with torch.no_grad():
        layer.bias.zero_()
    layer.bias.requires_grad_(False)


class MVInfoNCE(KViewMethod):
    """MV-InfoNCE (Koromilas, Georgiou, Bouritsas, Giannakopoulos, Nicolaou and Panagakis,
    arXiv 2507.06979; authors' code pakoromilas/Multi-View-CL; ``losses/mv_infonce.py``). Every
    image has one term, all its K (K - 1) positive pairs against the energy of all its views:

        l_b = -log sum_a sum_{c != a} e^{s(z_ab, z_cb)/t}
              / sum_a sum_{(c, n) in C(a, b)} e^{s(z_ab, z_cn)/t},   L = mean_b l_b

    with ``negatives`` choosing C(a, b). No two-view reference: at K = 2 the two anchors share
    one log, ``l_b = log((e^{l_b1} + e^{l_b2}) / 2)``, a log-mean-exp of the two-view InfoNCE /
    NT-Xent anchor terms rather than their mean, equal only when the anchors' denominators agree
    (``two_view_reference = None``; tests/test_losses_mv_infonce.py checks the identity).

    Heads: the authors' projector (:func:`authors_projector`, SimCLR's 2-layer head with BN).
    Large crops only (the loss has no place for small crops).

    Keys: :class:`MVInfoNCEKwargs` (``method_kwargs``).
    """

    loss_name = "mv_infonce"
    two_view_reference = None
    Kwargs = MVInfoNCEKwargs
    accepts_small_crops = False

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.temperature: float = kwargs.temperature
        self.negatives: str = kwargs.negatives
        self.band = band_filter(kwargs.filter)
        self.projector = authors_projector(self.features_dim, kwargs.proj_hidden_dim,
                                           kwargs.proj_output_dim)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return mv_infonce_loss(out["z"][: self.loss_views], temperature=self.temperature,
                               band=self.band, negatives=self.negatives)
