"""polyview: Poly-View contrastive learning (Shidani et al., ICLR 2024), K views per image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch

from solo_multiview.config.schema import section, setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.polyview import POLYVIEW_FORMS, polyview_loss
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.mv_simclr import nt_xent_two_view
from solo_multiview.methods.options import FilterKwargs, band_filter


@dataclass
class PolyViewKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector", minimum=1)
    temperature: float = setting(0.1, "softmax temperature t (default: SimCLR's ImageNet "
                                 "value, losses/polyview.py)", above=0)
    form: str = setting("geometric", "how an anchor's K - 1 positives are aggregated: "
                        "geometric / arithmetic mean of their probabilities, or the "
                        "sufficient statistic of the other views", choices=POLYVIEW_FORMS)
    filter: FilterKwargs = section(FilterKwargs, "the extreme-feature band filter (off)")


class PolyView(KViewMethod):
    """Poly-View contrastive learning (Shidani, Hjelm, Ramapuram, Webb, Dhekane and Busbridge,
    ICLR 2024, arXiv 2403.05490; ``losses/polyview.py``). For anchor view a of image b and each
    other view c, ``p_{b,a,c}`` is the SimCLR probability of picking ``z_{c,b}`` among itself
    and every view of every other image; ``form`` aggregates the K - 1 probabilities:

        geometric:  l = -1/(K-1) sum_{c != a} log p_{b,a,c}
        arithmetic: l = -log(1/(K-1) sum_{c != a} p_{b,a,c})

    (``sufficient_statistics`` contrasts z_{a,b} with the normalised sum of its other views),
    averaged over the K B anchors. K = 2: all three forms are NT-Xent exactly, so the declared
    reference is mv_simclr's textbook 2B-way cross entropy (``nt_xent_two_view``).

    Heads: SimCLR's 2-layer projector without BN (Linear-ReLU-Linear; solo-learn's SimCLR head,
    the one mv_simclr uses): the paper builds on SimCLR and published no code, so at K = 2 this
    method is mv_simclr exactly. Large crops only (the loss has no place for small crops).

    Keys: :class:`PolyViewKwargs` (``method_kwargs``).
    """

    loss_name = "polyview"
    two_view_reference = nt_xent_two_view
    Kwargs = PolyViewKwargs
    accepts_small_crops = False

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.temperature: float = kwargs.temperature
        self.form: str = kwargs.form
        self.band = band_filter(kwargs.filter)
        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, kwargs.proj_output_dim,
                             num_layers=2, batch_norm=False)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return polyview_loss(out["z"][: self.loss_views], temperature=self.temperature,
                             form=self.form, band=self.band)
