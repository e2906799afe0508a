"""emp_ssl: EMP-SSL (Tong et al., 2023), total coding rate plus invariance to the mean view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch

from solo_multiview.config.schema import setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.losses.emp_ssl import emp_ssl_loss
from solo_multiview.methods.heads import mlp


@dataclass
class EMPSSLKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector", minimum=1)
    eps: float = setting(0.2, "coding-rate distortion in the authors' code convention "
                         "(d / (N eps), the paper's eps^2; default: their --eps)", above=0)
    invariance_weight: float = setting(200.0, "weight lambda of the cosine to the mean view "
                                       "(default: the authors' --patch_sim)", minimum=0)


class EMPSSL(KViewMethod):
    """EMP-SSL (Tong, Chen, Ma and LeCun, arXiv 2304.03977; authors' code tsb0601/EMP-SSL;
    ``losses/emp_ssl.py``). With ``Z_k`` the (N, d) unit embeddings of view k over the global
    batch and ``zbar_b`` the mean view of image b:

        L = -1/K sum_k 1/2 logdet(I + d/(N eps) Z_k^T Z_k)
            - lambda/K sum_k mean_b cos(z_kb, zbar_b)

    No two-view reference: EMP-SSL has no classical two-view counterpart (at K = 2 it is the
    same coding-rate-plus-invariance objective; ``two_view_reference = None``).

    Heads: the authors' projector (``model/model.py``, ``encoder``: their ``pre_feature``
    Linear-BN-ReLU and ``projection`` Linear-BN-ReLU-Linear, i.e. a 3-layer MLP with BN,
    512 -> 4096 -> 4096 -> 1024 on a ResNet-18). The authors evaluate on the 4096-d output of
    the first projector layer averaged over 128 test patches; the probes here read the backbone
    features of one image, as for every method. Large crops only (the loss has no place for
    small crops). No band filter (not a contrastive loss), so ``method_kwargs.filter`` is an
    unknown key.

    Keys: :class:`EMPSSLKwargs` (``method_kwargs``).
    """

    loss_name = "emp_ssl"
    two_view_reference = None
    Kwargs = EMPSSLKwargs
    accepts_small_crops = False

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.eps: float = kwargs.eps
        self.invariance_weight: float = kwargs.invariance_weight
        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, kwargs.proj_output_dim,
                             num_layers=3, batch_norm=True)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return emp_ssl_loss(out["z"][: self.loss_views], eps=self.eps,
                            invariance_weight=self.invariance_weight)
