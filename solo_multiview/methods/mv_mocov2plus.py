"""mv_mocov2plus: MoCo v2+ with K >= 2 large views and one key queue per view."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import omegaconf
import torch
import torch.nn.functional as F

from solo_multiview.config.schema import ConfigError, section, setting
from solo_multiview.data.views import ViewKwargs
from solo_multiview.hosts.contract import KViewMomentumMethod
from solo_multiview.losses.distributed import gather_no_grad
from solo_multiview.losses.mv_mocov2plus import mv_mocov2plus_loss
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import FilterKwargs, band_filter


@dataclass
class MVMoCoV2PlusKwargs(ViewKwargs):
    proj_hidden_dim: int = setting(help="hidden width of the projector", minimum=1)
    proj_output_dim: int = setting(help="output width of the projector", minimum=1)
    temperature: float = setting(help="softmax temperature t", above=0)
    queue_size: int = setting(65536, "keys per view queue (>= optimizer.batch_size)", minimum=1)
    filter: FilterKwargs = section(FilterKwargs, "the extreme-feature band filter (off)")


def moco_two_view(method: Any, out: Dict[str, Any], batch: Sequence[Any]) -> torch.Tensor:
    """solo-learn's two-view MoCo v2+: (InfoNCE(q_1, k_2, Q_2) + InfoNCE(q_2, k_1, Q_1)) / 2, each
    a (1 + |Q|)-way classification with the positive first; the declared K = 2 reference (no
    filter, read before the step enqueues its keys)."""
    q1, q2 = (torch.nn.functional.normalize(q, dim=-1) for q in out["z"][:2])
    k1, k2 = (torch.nn.functional.normalize(k.detach(), dim=-1) for k in out["momentum_z"][:2])
    queue = method.queue.clone().detach()

    def info_nce(q: torch.Tensor, k: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ keys], dim=1)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return torch.nn.functional.cross_entropy(logits / method.temperature, target)

    return (info_nce(q1, k2, queue[1]) + info_nce(q2, k1, queue[0])) / 2


class MVMoCoV2Plus(KViewMomentumMethod):
    """K-view MoCo v2+ (https://arxiv.org/abs/2003.04297, solo-learn's symmetric "plus" variant,
    generalised to K views).

    Queries q_i come from the online backbone + projector, keys k_j from their EMA copies; both
    are L2-normalised. Every view j has its own queue Q_j of past keys of view j. For the ordered
    pairs i != j (``losses/mv_mocov2plus.py``):

        nce(q_i, k_j, Q_j)_b = -log( exp(<q_ib, k_jb>/t)
                                     / (exp(<q_ib, k_jb>/t) + sum_m exp(<q_ib, Q_j[:, m]>/t)) )
        L = 1 / (K(K-1)) * sum_{i != j} mean_b nce(q_i, k_j, Q_j)_b

    At K = 2 this is solo-learn's ``(nce(q_1, k_2, Q_2) + nce(q_2, k_1, Q_1)) / 2``; every term is
    a mean, so the scale does not grow with K. All K large crops go through the backbone in one
    call and through the momentum backbone in one call. Large crops only: small crops are refused
    at config time.

    Queues: buffer ``queue`` of shape (K, proj_output_dim, queue_size), random unit columns at
    start, and a shared pointer ``queue_ptr``. After each step the keys of view j, gathered across
    ranks (N = B * world_size rows, no gradient), replace the N oldest columns of ``queue[j]``
    (wrapping around the end), and the pointer advances by N modulo queue_size.

    Optional extreme-feature filter (``method_kwargs.filter``): logits whose |cosine| is outside
    the band leave the softmax sums; a term whose positive is outside the band is dropped; the
    removed fraction is logged as ``train_filtered_fraction``.

    Keys: :class:`MVMoCoV2PlusKwargs` (``method_kwargs``).
    """

    loss_name = "nce"
    two_view_reference = moco_two_view
    Kwargs = MVMoCoV2PlusKwargs
    accepts_small_crops = False

    normalize_projection = True

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.temperature: float = kwargs.temperature
        self.queue_size: int = kwargs.queue_size
        self.band = band_filter(kwargs.filter)
        proj_output_dim: int = kwargs.proj_output_dim

        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, proj_output_dim,
                             num_layers=2, batch_norm=False)
        self.momentum_projector = copy.deepcopy(self.projector)
        for param in self.momentum_projector.parameters():
            param.requires_grad = False

        queue = torch.randn(self.loss_views, self.fused_dim(proj_output_dim), self.queue_size)
        self.register_buffer("queue", F.normalize(queue, dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @classmethod
    def check_cfg(cls, cfg: Any) -> None:
        super().check_cfg(cfg)
        size, batch = cfg.method_kwargs.queue_size, cfg.optimizer.batch_size
        if size < batch:
            raise ConfigError(f"method_kwargs.queue_size: got {size}; expected an int >= "
                              f"optimizer.batch_size ({batch}): each step enqueues a batch")

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Writes ``keys`` (K, N, d), view j into ``queue[j]``, over the N columns from the
        pointer on (wrapping around), normalised; advances the pointer by N."""
        num_keys = keys.shape[1]
        if num_keys > self.queue_size:
            raise ValueError(
                f"method_kwargs.queue_size: {self.queue_size} is smaller than the {num_keys} keys "
                "one step enqueues (optimizer.batch_size x devices); raise it"
            )
        columns = (self.queue_ptr + torch.arange(num_keys, device=self.queue.device))
        columns = columns % self.queue_size
        keys = F.normalize(keys, dim=-1).to(self.queue.dtype)
        self.queue.index_copy_(2, columns, keys.transpose(1, 2))
        self.queue_ptr.copy_((self.queue_ptr + num_keys) % self.queue_size)

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        queries, keys = out["z"], out["momentum_z"]
        # the loss reads a normalised copy of the queue, so updating it in place afterwards is safe
        loss, stats = mv_mocov2plus_loss(queries, keys, self.queue, self.temperature,
                                         band=self.band)
        self.enqueue(torch.stack([gather_no_grad(key) for key in keys]))
        return loss, ({"filtered_fraction": stats["filtered_fraction"]} if self.band else {})
