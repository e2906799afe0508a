"""mv_mocov2plus: MoCo v2+ with K >= 2 large views and one key queue per view."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import omegaconf
import torch
import torch.nn.functional as F

from solo_multiview.config.common import select
from solo_multiview.hosts.contract import BaseMomentumMethod
from solo_multiview.losses.distributed import gather_no_grad
from solo_multiview.losses.mv_mocov2plus import mv_mocov2plus_loss
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import (
    add_filter_defaults,
    check_num_large_crops,
    filter_band,
    number_above,
    positive_int,
    refuse_small_crops,
    require,
    require_positive_ints,
)
from solo_multiview.methods.projection import MomentumProjectorOutputs


class MVMoCoV2Plus(MomentumProjectorOutputs, BaseMomentumMethod):
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

    Extra cfg settings:
        method_kwargs:
            proj_hidden_dim (int): hidden width of the projector (Linear-ReLU-Linear).
            proj_output_dim (int): output width d of the projector (and of the queued keys).
            temperature (float): softmax temperature t > 0.
            queue_size (int): keys per view queue, >= the global batch (default 65536).
            filter: the extreme-feature band filter (``methods/options.py``), off by default.
        momentum:
            base_tau, final_tau (float): EMA coefficient schedule (host defaults 0.99 -> 1.0).
    """

    normalize_projection = True

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.temperature: float = kwargs.temperature
        self.queue_size: int = kwargs.queue_size
        self.band = filter_band(cfg)
        proj_output_dim: int = kwargs.proj_output_dim

        self.projector = mlp(self.features_dim, kwargs.proj_hidden_dim, proj_output_dim,
                             num_layers=2, batch_norm=False)
        self.momentum_projector = copy.deepcopy(self.projector)
        for param in self.momentum_projector.parameters():
            param.requires_grad = False

        queue = torch.randn(self.num_large_crops, proj_output_dim, self.queue_size)
        self.register_buffer("queue", F.normalize(queue, dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        cfg = super().add_and_assert_specific_cfg(cfg)
        require_positive_ints(cfg, "proj_hidden_dim", "proj_output_dim")
        require(cfg, "method_kwargs.temperature", number_above(0.0), "a number > 0")
        cfg.method_kwargs.queue_size = select(cfg, "method_kwargs.queue_size", 65536)
        batch_size = select(cfg, "optimizer.batch_size", 1)
        require(cfg, "method_kwargs.queue_size",
                lambda v: positive_int(v) and v >= batch_size,
                f"an int >= optimizer.batch_size ({batch_size}): each step enqueues a batch")
        check_num_large_crops(cfg, "mv_mocov2plus")
        refuse_small_crops(cfg, "mv_mocov2plus")
        return add_filter_defaults(cfg)

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

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        queries, keys = out["z"], out["momentum_z"]
        # the loss reads a normalised copy of the queue, so updating it in place afterwards is safe
        nce_loss, stats = mv_mocov2plus_loss(queries, keys, self.queue, self.temperature,
                                             band=self.band)
        self.enqueue(torch.stack([gather_no_grad(key) for key in keys]))

        self.log("train_nce_loss", nce_loss, on_epoch=True, sync_dist=True)
        if self.band is not None:
            self.log("train_filtered_fraction", stats["filtered_fraction"], on_epoch=True,
                     sync_dist=True)
        return nce_loss + out["loss"]
