"""mv_dhel: MV-DHEL (Koromilas et al., arXiv 2507.06979), decoupled K-view hyperspherical
energy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch
import torch.nn.functional as F

from solo_multiview.config.schema import section, setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.mv_dhel import mv_dhel_loss
from solo_multiview.methods.mv_infonce import authors_projector
from solo_multiview.methods.options import FilterKwargs, band_filter


@dataclass
class MVDHELKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector", minimum=1)
    temperature: float = setting(0.5, "softmax temperature t (default: the authors' CIFAR "
                                 "configs)", above=0)
    filter: FilterKwargs = section(FilterKwargs, "the extreme-feature band filter (off)")


def dhel_two_view(method: Any, out: Dict[str, Any], batch: Sequence[Any]) -> torch.Tensor:
    """Two-view DHEL with both views' energies (DHEL, arXiv 2405.18045, ``include_augs=True``)
    written directly: for image b, ``-s(u_b, v_b)/t + log sum_{n != b} e^{s(u_b, u_n)/t} +
    log sum_{n != b} e^{s(v_b, v_n)/t}``, averaged over b; the declared K = 2 reference (no
    filter, one process)."""
    u, v = (F.normalize(z.double(), dim=-1) for z in out["z"][:2])
    t = method.temperature
    eye = torch.eye(u.shape[0], dtype=torch.bool, device=u.device)

    def energy(x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp((x @ x.T / t).masked_fill(eye, float("-inf")), dim=1)

    loss = -(u * v).sum(dim=1) / t + energy(u) + energy(v)
    return loss.mean().to(out["z"][0].dtype)


class MVDHEL(KViewMethod):
    """MV-DHEL (Koromilas, Georgiou, Bouritsas, Giannakopoulos, Nicolaou and Panagakis,
    arXiv 2507.06979; authors' code pakoromilas/Multi-View-CL; ``losses/mv_dhel.py``, in log
    space). Alignment of all K views of an image, decoupled from the uniformity of each view over
    the same view of the other images:

        l_b = 2/K [ -log mean_{a != c} e^{s(z_ab, z_cb)/t}
                    + sum_a log sum_{n != b} e^{s(z_ab, z_an)/t} ],   L = mean_b l_b

    K = 2: exactly two-view DHEL with both views' energies (``dhel_two_view``, written
    independently of the loss module).

    Heads: the authors' projector (``mv_infonce.authors_projector``, SimCLR's 2-layer head with
    BN, as their ``EncodeProject``). Large crops only (the loss has no place for small crops).

    Keys: :class:`MVDHELKwargs` (``method_kwargs``).
    """

    loss_name = "mv_dhel"
    two_view_reference = dhel_two_view
    Kwargs = MVDHELKwargs
    accepts_small_crops = False

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.temperature: float = kwargs.temperature
        self.band = band_filter(kwargs.filter)
        self.projector = authors_projector(self.features_dim, kwargs.proj_hidden_dim,
                                           kwargs.proj_output_dim)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return mv_dhel_loss(out["z"][: self.loss_views], temperature=self.temperature,
                            band=self.band)
