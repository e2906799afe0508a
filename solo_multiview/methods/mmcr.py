"""mmcr: Maximum Manifold Capacity Representations (Yerxa et al., NeurIPS 2023), K views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch

from solo_multiview.config.schema import setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.mmcr import mmcr_loss
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.mv_infonce import frozen_zero_bias


@dataclass
class MMCRKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector", minimum=1)
    lmbda: float = setting(0.0, "weight of the mean per-sample nuclear norm (0: the authors' "
                           "--lmbda default)", minimum=0)


class MMCR(KViewMethod):
    """MMCR (Yerxa, Kuang, Simoncelli and Chung, NeurIPS 2023; authors' code ThomasYerxa/mmcr;
    ``losses/mmcr.py``). With ``c_b`` the mean of the K L2-normalised views of image b, ``C`` the
    (N, d) matrix of the centroids of the global batch and ``Z_b`` the (K, d) views of b:

        L = -||C||_* + lmbda / N sum_b ||Z_b||_*       (nuclear norms)

    No two-view reference: MMCR has no classical two-view counterpart; at K = 2 it is still the
    nuclear norm of the batch of two-view centroids (``two_view_reference = None``).

    Heads: the authors' CIFAR projector (``mmcr/cifar_stl/models.py``, ``projector_dims=[512,
    128]`` after Barlow Twins' layout): Linear-BN-ReLU-Linear, no bias on the output layer (here
    frozen at 0; the hidden layer's bias is followed by BN, which removes it). Large crops only
    (the loss has no place for small crops). No band filter (not a contrastive loss), so
    ``method_kwargs.filter`` is an unknown key.

    Keys: :class:`MMCRKwargs` (``method_kwargs``).
    """

    loss_name = "mmcr"
    two_view_reference = None
    Kwargs = MMCRKwargs
    accepts_small_crops = False

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.lmbda: float = kwargs.lmbda
        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, kwargs.proj_output_dim,
                             num_layers=2, batch_norm=True)
        frozen_zero_bias(self.projector[-1])

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return mmcr_loss(out["z"][: self.loss_views], lmbda=self.lmbda)
