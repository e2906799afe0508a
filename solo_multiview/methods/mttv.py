"""mttv: the method of arXiv 2509.08469 ("Maximally Useful and Minimally Redundant", MTTV/MIMV)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import omegaconf
import torch

from solo_multiview.config.schema import ConfigError, section, setting
from solo_multiview.data.views import PARTNERS, ROLES, NumViewsKwargs, ViewSpec
from solo_multiview.hosts.contract import KViewMomentumMethod
from solo_multiview.hosts.keys import MomentumConfig
from solo_multiview.losses.mttv import MTTV_FORMS, OfficialFormError, mttv_infonce
from solo_multiview.methods.heads import mlp
from solo_multiview.methods.options import EnabledFilterKwargs, band_filter

FUSIONS = ("sum", "concat")


@dataclass
class MTTVKwargs(NumViewsKwargs):
    num_views: int = setting(1, "K: partner images per anchor (the paper's default is 1)",
                             minimum=1)
    proj_hidden_dim: Optional[int] = setting(None, "projector hidden width (null: the "
                                             "backbone's d)", minimum=1)
    proj_output_dim: Optional[int] = setting(None, "projector output width (null: d // 4)",
                                             minimum=1)
    temperature: float = setting(0.3, "softmax temperature", above=0)
    fusion: str = setting("sum", "how the two views of a pair are fused", choices=FUSIONS)
    partner: str = setting("image", "a random partner image, or none (y = x: SimCLR with an "
                           "EMA target)", choices=PARTNERS)
    views: str = setting("normalized_augmented", "roles of the four views of a pair",
                         choices=ROLES)
    form: str = setting("principled", "the loss: principled, or the authors' (official)",
                        choices=MTTV_FORMS)
    filter: EnabledFilterKwargs = section(EnabledFilterKwargs, "the band filter (on)")


@dataclass
class MTTVMomentum(MomentumConfig):
    base_tau: float = setting(0.9, "EMA momentum m (constant when final_tau equals it)",
                              minimum=0, maximum=1)
    final_tau: float = setting("${.base_tau}", "EMA momentum at the end (default: base_tau)",
                               minimum=0, maximum=1)


class MTTV(KViewMomentumMethod):
    """More Than Two Views (MIMV): fuse an image with a random partner image, contrast the fusion.

    For each anchor x, K = ``num_views`` partners y are drawn uniformly from the (long-tailed)
    training set (``data/pairing.py``). Per pair, x_n, y_n are normalised only and x_a, y_a
    strongly augmented; with f the backbone, g the 3-layer BN projector (d -> d -> d/4, no
    predictor) and f', g' their EMA copies (target = m * target + (1 - m) * online, constant
    m = 0.9 by default)::

        z  = g(f(x_n)) (+) g(f(y_a))          online, with gradient
        z' = g'(f'(x_a)) (+) g'(f'(y_n))      target, no gradient

    with (+) a sum (default) or a concatenation. (z_m, z'_m) is the positive pair and every other
    fused embedding of the (global) batch a negative; the loss is the filtered InfoNCE of
    ``losses/mttv.py`` at temperature 0.3, with similarities outside the band [0.1, 0.9] removed
    (``form: principled`` by default; ``form: official`` reproduces the authors' loss; a step
    where one of its denominators is <= 0 stops the run with :class:`OfficialFormError`, one
    line that main_pretrain.py prints as ``error: ...``; parsing warns when the batch makes
    that likely, :meth:`small_batch_warning`).

    Each branch makes two backbone calls, one per view type (normalised, augmented), each on all
    B*K pairs at once: the official code forwards the two view types separately, so BatchNorm
    normalises them with their own statistics. The online classifier is trained on the anchors'
    normalised views x_n (their labels are the batch targets).

    Keys: :class:`MTTVKwargs` (``method_kwargs``), :class:`MTTVMomentum` (``momentum``).
    """

    Kwargs = MTTVKwargs
    Momentum = MTTVMomentum
    accepts_small_crops = False
    min_views = 1
    preset_views = ()  # mttv's presets are files: their batch sizes differ with K

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        kwargs = cfg.method_kwargs
        self.num_pairs: int = kwargs.num_views
        self.temperature: float = kwargs.temperature
        self.fusion: str = kwargs.fusion
        self.form: str = kwargs.form
        self.band = band_filter(kwargs.filter)
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
    def views(cls, cfg: Any) -> ViewSpec:
        kwargs = cfg.method_kwargs
        return ViewSpec(num_views=int(kwargs.num_views), scheme="pairs", partner=kwargs.partner,
                        roles=kwargs.views, fusion=kwargs.get("fusion", "sum"))

    @classmethod
    def check_cfg(cls, cfg: Any) -> None:
        """One augmentation entry (the strong augmentation) with num_crops = K: each of the K
        pairs takes one augmented view of the anchor and of its partner."""
        if len(cfg.augmentations) != 1:
            raise ConfigError(
                f"augmentations: mttv takes exactly one augmentation entry (its strong "
                f"augmentation), got {len(cfg.augmentations)}; it makes 4 * "
                "method_kwargs.num_views views per image itself (x_n, y_a, x_a, y_n per pair)"
            )
        super().check_cfg(cfg)
        warning = cls.small_batch_warning(cfg)
        if warning:
            warnings.warn(warning, stacklevel=2)

    @classmethod
    def small_batch_warning(cls, cfg: Any) -> Optional[str]:
        """A warning when ``form: official`` with the band filter runs with so few embeddings
        per step that a denominator <= 0 is likely: fewer than ``4 exp(1/t)`` (112 at t = 0.3;
        the digits quickstart at t = 0.3 stops at step 0 with 32 and runs with 64)."""
        kwargs = cfg.method_kwargs
        if kwargs.form != "official" or not kwargs.filter.enabled:
            return None
        from solo_multiview.training.devices import count_devices

        world = count_devices(cfg.devices, cfg.accelerator) * int(cfg.get("num_nodes", 1) or 1)
        rows = 2 * int(cfg.optimizer.batch_size) * int(kwargs.num_views) * world
        limit = 4 * math.exp(1 / float(kwargs.temperature))
        if rows >= limit:
            return None
        return (f"method_kwargs.form=official with {rows} embeddings per step (2 x "
                f"optimizer.batch_size={cfg.optimizer.batch_size} x num_views="
                f"{kwargs.num_views} x {world} device(s)), fewer than 4 exp(1/t) = {limit:.0f}: "
                f"the official loss subtracts exp(1/t) from each row's sum after the band "
                "already removed the self-similarity, so rows with a denominator <= 0 are likely "
                "and the run would stop there; use method_kwargs.form=principled or a larger "
                "batch")

    def official_failure(self, bad: int, pairs: int) -> str:
        """The one line of :class:`OfficialFormError` (``bad`` rows of all ranks)."""
        trainer = getattr(self, "_trainer", None)
        world = int(trainer.world_size) if trainer is not None else 1
        step = f" at global step {trainer.global_step}" if trainer is not None else ""
        rows = 2 * pairs * world
        band = ("the band filter already removed the self-similarity (cos 1 > "
                f"{self.band.high:g})" if self.band is not None else
                "with the filter off it stands for the self term, exact only when cos = 1")
        return (f"method_kwargs.form=official: {bad} of {rows} rows have a denominator <= 0"
                f"{step} (optimizer.batch_size={self.cfg.optimizer.batch_size} anchors x "
                f"{self.num_pairs} pair(s) x {world} device(s) -> {rows} embeddings). The "
                f"official loss subtracts exp(1/t) = {math.exp(1 / self.temperature):.4g} from "
                f"each row's sum of kept exp(s/t), and {band}, so a row whose kept "
                "similarities add up to less than exp(1/t) has no valid ratio (a NaN or "
                "negative term); use method_kwargs.form=principled, or a larger "
                "optimizer.batch_size (the authors train with 1024)")

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b if self.fusion == "sum" else torch.cat([a, b], dim=1)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """Crops come in the pairing order [x_n^1..x_n^K, y_a^1..y_a^K, x_a^1..x_a^K,
        y_n^1..y_n^K]; each group of K is concatenated pair-major (all images' pair 1, then
        pair 2, ...), so row m of every group belongs to the same (anchor, partner) pair."""
        _, crops, targets = batch
        K = self.num_pairs
        if len(crops) != 4 * K:
            raise ValueError(f"mttv expects 4 * num_views = {4 * K} crops per image (x_n, y_a, "
                             f"x_a, y_n per pair), got {len(crops)}")
        x_n, y_a, x_a, y_n = (torch.cat(crops[i * K:(i + 1) * K]) for i in range(4))
        anchor_targets = targets.repeat(K)

        anchor = self.base_training_step(x_n, anchor_targets)  # online classifier on x_n too
        partner = self.multicrop_forward(y_a)
        target_x = self.momentum_forward(x_a)
        target_y = self.momentum_forward(y_n)
        z_online = self.fuse(anchor["z"], partner["z"])
        z_target = self.fuse(target_x["z"], target_y["z"])

        loss, stats = mttv_infonce(z_online, z_target, self.temperature, band=self.band,
                                   form=self.form)
        if self.form == "official":
            bad = int(stats.pop("nonpositive_denominators"))  # one host sync per step
            if bad:
                raise OfficialFormError(self.official_failure(bad, z_online.shape[0]))
        self.record({"train_mttv_loss": loss,
                     **{f"train_{name}": value for name, value in stats.items()}})
        # the host step's bookkeeping, for the anchors' normalised views
        self.log_classifier_metrics(anchor, "train")
        self.update_online_knn(anchor["feats"], anchor_targets)
        return loss + anchor["loss"]
