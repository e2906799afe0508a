"""mttv: the method of arXiv 2509.08469 ("Maximally Useful and Minimally Redundant", MTTV/MIMV)."""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import omegaconf
import torch

from solo_multiview.config.common import check_choice, select
from solo_multiview.hosts.contract import BaseMomentumMethod
from solo_multiview.losses.mttv import MTTV_FORMS, mttv_infonce
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import (
    add_filter_defaults,
    number_above,
    positive_int,
    require,
    require_positive_ints,
)
from solo_multiview.methods.projection import MomentumProjectorOutputs

FUSIONS = ("sum", "concat")
PARTNERS = ("image", "none")
VIEWS = ("normalized_augmented", "augmented_augmented")


class MTTV(MomentumProjectorOutputs, BaseMomentumMethod):
    """More Than Two Views (MIMV): fuse an image with a random partner image, contrast the fusion.

    For each anchor x, K = ``num_pairs`` partners y are drawn uniformly from the (long-tailed)
    training set (``data/pairing.py``). Per pair, x_n, y_n are normalised only and x_a, y_a
    strongly augmented; with f the backbone, g the 3-layer BN projector (d -> d -> d/4, no
    predictor) and f', g' their EMA copies (target = m * target + (1 - m) * online, constant
    m = 0.9 by default)::

        z  = g(f(x_n)) (+) g(f(y_a))          online, with gradient
        z' = g'(f'(x_a)) (+) g'(f'(y_n))      target, no gradient

    with (+) a sum (default) or a concatenation. (z_m, z'_m) is the positive pair and every other
    fused embedding of the (global) batch a negative; the loss is the filtered InfoNCE of
    ``losses/mttv.py`` at temperature 0.3, with similarities outside the band [0.1, 0.9] removed
    (``form: principled`` by default; ``form: official`` reproduces the authors' loss).

    Each branch makes two backbone calls, one per view type (normalised, augmented), each on all
    B*K pairs at once: the official code forwards the two view types separately, so BatchNorm
    normalises them with their own statistics. The online classifier is trained on the anchors'
    normalised views x_n (their labels are the batch targets).

    Extra cfg settings:
        method_kwargs:
            num_pairs (int): K, partners per anchor (default 1, as in the paper).
            proj_hidden_dim (int): projector hidden width (default: the backbone's d).
            proj_output_dim (int): projector output width (default: d // 4).
            temperature (float): softmax temperature (default 0.3).
            fusion (str): ``sum`` | ``concat``.
            partner (str): ``image`` (a random partner) | ``none`` (y = x: one image, i.e.
                SimCLR with an EMA target).
            views (str): ``normalized_augmented`` (x_n, y_n normalised only) |
                ``augmented_augmented`` (all four views strongly augmented).
            form (str): ``principled`` | ``official`` (see ``losses/mttv.py``).
            filter: the band filter, enabled by default (``low`` 0.1, ``high`` 0.9, ``mode``
                ``band`` | ``low_only``); ``enabled: false`` keeps every similarity.
        momentum:
            base_tau / final_tau (float): EMA momentum m, constant 0.9 when equal (default).
    """

    data_pipeline = "mttv_pairs"

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.num_pairs: int = kwargs.num_pairs
        self.temperature: float = kwargs.temperature
        self.fusion: str = kwargs.fusion
        self.form: str = kwargs.form
        band = kwargs.filter
        self.band: Tuple[float, float, str] = (
            (float(band.low), float(band.high), str(band.mode)) if band.enabled
            else (float(band.low), float(band.high), "none")
        )
        hidden = kwargs.proj_hidden_dim or self.features_dim
        output = kwargs.proj_output_dim or self.features_dim // 4
        self.projector = mlp(self.features_dim, hidden, output, num_layers=3,
                             batch_norm=True, last_batch_norm=True)
        self.momentum_projector = mlp(self.features_dim, hidden, output, num_layers=3,
                                      batch_norm=True, last_batch_norm=True)
        self.momentum_projector.load_state_dict(self.projector.state_dict())
        for param in self.momentum_projector.parameters():
            param.requires_grad = False

    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        cfg.momentum = select(cfg, "momentum", {})
        cfg.momentum.base_tau = select(cfg, "momentum.base_tau", 0.9)
        cfg.momentum.final_tau = select(cfg, "momentum.final_tau", cfg.momentum.base_tau)
        cfg = super().add_and_assert_specific_cfg(cfg)
        kwargs = cfg.method_kwargs
        kwargs.num_pairs = select(cfg, "method_kwargs.num_pairs", 1)
        kwargs.temperature = select(cfg, "method_kwargs.temperature", 0.3)
        kwargs.proj_hidden_dim = select(cfg, "method_kwargs.proj_hidden_dim", None)
        kwargs.proj_output_dim = select(cfg, "method_kwargs.proj_output_dim", None)
        kwargs.fusion = select(cfg, "method_kwargs.fusion", "sum")
        kwargs.partner = select(cfg, "method_kwargs.partner", "image")
        kwargs.views = select(cfg, "method_kwargs.views", "normalized_augmented")
        kwargs.form = select(cfg, "method_kwargs.form", "principled")
        require(cfg, "method_kwargs.num_pairs", positive_int, "an int >= 1 (K partners per anchor)")
        require(cfg, "method_kwargs.temperature", number_above(0.0), "a number > 0")
        require_positive_ints(cfg, *(key for key in ("proj_hidden_dim", "proj_output_dim")
                                     if kwargs[key] is not None))
        check_choice(cfg, "method_kwargs.fusion", FUSIONS)
        check_choice(cfg, "method_kwargs.partner", PARTNERS)
        check_choice(cfg, "method_kwargs.views", VIEWS)
        check_choice(cfg, "method_kwargs.form", MTTV_FORMS)
        augmentations = select(cfg, "augmentations")
        if len(augmentations) != 1 or augmentations[0].num_crops != 1:
            raise ValueError(
                "augmentations: mttv takes exactly one augmentation entry with num_crops: 1 (its "
                "strong augmentation); it makes 4 * method_kwargs.num_pairs views per image "
                "itself (x_n, y_a, x_a, y_n per pair)"
            )
        return add_filter_defaults(cfg, enabled=True)

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b if self.fusion == "sum" else torch.cat([a, b], dim=1)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """Crops come in the pairing order [x_n^1..x_n^K, y_a^1..y_a^K, x_a^1..x_a^K,
        y_n^1..y_n^K]; each group of K is concatenated pair-major (all images' pair 1, then
        pair 2, ...), so row m of every group belongs to the same (anchor, partner) pair."""
        _, crops, targets = batch
        K = self.num_pairs
        if len(crops) != 4 * K:
            raise ValueError(f"mttv expects 4 * num_pairs = {4 * K} crops per image (x_n, y_a, "
                             f"x_a, y_n per pair), got {len(crops)}")
        x_n, y_a, x_a, y_n = (torch.cat(crops[i * K:(i + 1) * K]) for i in range(4))
        anchor_targets = targets.repeat(K)

        anchor = self.base_training_step(x_n, anchor_targets)  # online classifier on x_n too
        partner = self.multicrop_forward(y_a)
        target_x = self.momentum_forward(x_a)
        target_y = self.momentum_forward(y_n)
        z_online = self.fuse(anchor["z"], partner["z"])
        z_target = self.fuse(target_x["z"], target_y["z"])

        low, high, mode = self.band
        loss, stats = mttv_infonce(z_online, z_target, self.temperature, low=low, high=high,
                                   mode=mode, form=self.form)
        self.log_dict(
            {"train_mttv_loss": loss, **{f"train_{name}": value for name, value in stats.items()}},
            on_epoch=True,
            sync_dist=True,
        )
        # the host step's bookkeeping, for the anchors' normalised views
        self.log_classifier_metrics(anchor, "train")
        self.update_online_knn(anchor["feats"], anchor_targets)
        return loss + anchor["loss"]
