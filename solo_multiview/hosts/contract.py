"""The host contract: what a method may rely on from the base class it is built on, and what a
method declares. The architecture is written down in docs/architecture.md.

A method is written once, as a subclass of :class:`KViewMethod` or
:class:`KViewMomentumMethod` below, in solo-learn's style (``super().__init__(cfg)``, its heads,
its loss call ``kview_loss``). :func:`solo_multiview.hosts.compose` puts the
host's real base class behind these in the MRO, so ``super()`` inside a method reaches either
solo-learn's ``solo.methods.base.BaseMethod`` or the built-in one (``hosts/builtin.py``).

What a method declares (read by the config parser, the data pipelines and the resume key):

* ``Kwargs``: the dataclass of its ``method_kwargs`` (subclassing ``data/views.py``'s
  ``ViewKwargs``: K as ``num_views``; the band filter is in ``methods/options.py``);
  ``Momentum``: the dataclass of ``momentum.*`` (momentum methods only; ``hosts/keys.py``).
* ``views(cfg)``: its :class:`~solo_multiview.data.views.ViewSpec` (default: K large crops from
  ``augmentations`` plus the small ones when ``accepts_small_crops``).
* ``kview_loss(out, batch)``: its loss from the per-crop outputs of the host step; the
  contract's ``training_step`` calls it and logs ``train_<loss_name>_loss`` (a method with a
  step of its own, mttv, overrides ``training_step``).
* ``check_cfg(cfg)``: checks across keys that a declaration cannot express (ConfigError).
* ``preset_views``: the K of its generated CIFAR-LT presets (``training/presets.py``).

What every host provides (solo-learn's names and meanings):

* ``__init__(cfg)`` builds ``self.backbone`` (flat features of size ``self.features_dim``),
  ``self.classifier`` (the online linear probe, trained on detached features), and reads
  ``self.num_large_crops``, ``self.num_small_crops``, ``self.max_epochs``, optimizer and
  scheduler settings from ``cfg`` (the parsed config: every key has its value).
* ``learnable_params``: list of optimizer parameter groups (dicts with ``name`` and ``params``;
  optional ``lr``, ``weight_decay``, ``static_lr``).
* ``forward(X)`` -> ``{"feats", "logits"}``; ``multicrop_forward(X)`` -> ``{"feats"}``. Methods
  extend these dicts (e.g. with the projection ``"z"``).
* ``training_step(batch, batch_idx)``: all same-size crops go through ``forward`` in **one** call
  (``hosts/multiview_step.py``); returns per-crop lists (``outs["z"][k]`` is crop ``k``) and
  ``outs["loss"]``, the online classifier's loss, to which the method adds its own. A method
  that writes its own step (mttv) reuses the step's bookkeeping:
  ``log_classifier_metrics(out, prefix)`` and ``update_online_knn(feats, targets)``.
* Momentum hosts add ``self.momentum_backbone`` (EMA copy), ``momentum_forward(X)``,
  ``momentum_pairs`` (``(online, target)`` module pairs updated after each optimizer step with
  ``target = tau * target + (1 - tau) * online``), ``self.momentum_updater`` (``cur_tau``,
  cosine schedule ``momentum.base_tau`` -> ``momentum.final_tau``), and per-crop
  ``outs["momentum_<key>"]`` lists from ``training_step``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from solo_multiview.config.schema import ConfigError
from solo_multiview.data.augmentations import count_crops
from solo_multiview.data.views import ViewKwargs, ViewSpec
from solo_multiview.hosts.guard import NonFiniteGuard
from solo_multiview.hosts.keys import MomentumConfig


def check_pairs_cfg(cfg: Any) -> None:
    """The pairs (MIMV) scheme: one augmentation entry, the strong augmentation, with
    ``num_crops`` = K (one augmented view of the anchor and of its partner per pair), no small
    crops; the loss sees two fused views per pair, so K >= 1 suffices."""
    if len(cfg.augmentations) != 1:
        raise ConfigError(
            f"augmentations: {cfg.method} takes exactly one augmentation entry for MIMV pairs "
            f"(its strong augmentation), got {len(cfg.augmentations)}; it makes 4 * "
            "method_kwargs.num_views views per image itself (x_n, y_a, x_a, y_n per pair)"
        )


class KViewMethod:
    """What every K-view method is built on; the host's base class is placed behind it. It
    holds the method's declarations (below), the projector (and predictor) outputs and the
    step's loss call and logging."""

    host_kind = "base"
    #: ``z`` is L2-normalised (MoCo)
    normalize_projection = False
    #: the predictor keeps a constant learning rate under the schedule (SimSiam)
    predictor_static_lr = False
    Kwargs: type = ViewKwargs
    Momentum: Optional[type] = None
    #: whether the loss has a place for small crops (multi-crop)
    accepts_small_crops = True
    #: K of the generated presets ``<method>_k<K>_cifar{10,100}lt`` (``training/presets.py``)
    preset_views: tuple = (2, 4, 8)
    #: the K-view loss is logged as ``train_<loss_name>_loss``
    loss_name = "kview"
    #: ``f(method, out, batch) -> loss``: the standard two-view loss written independently, which
    #: ``kview_loss`` must equal at K = 2 (tests/test_registry.py); None where the objective has
    #: no two-view form to reduce to (say why in the method's docstring)
    two_view_reference: Optional[Callable[..., torch.Tensor]] = None

    def kview_loss(self, out: Dict[str, Any], batch: Sequence[Any]
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The method's loss from the host step's per-crop outputs (``out["z"][k]`` is crop k;
        ``out["p"]``, ``out["momentum_z"]`` where the method has them) and the batch; returns
        ``(loss, stats)``, stats logged as ``train_<name>``."""
        raise NotImplementedError(f"{type(self).__name__} defines no kview_loss")

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """The host's batched step (online classifier included), then the method's loss."""
        out = super().training_step(batch, batch_idx)  # type: ignore[misc]
        loss, stats = self.kview_loss(out, batch)
        self.record({f"train_{self.loss_name}_loss": loss,
                     **{f"train_{k}": v for k, v in stats.items()}})
        return loss + out["loss"]

    # ------------------------------------------------------------ heads
    # ``z = projector(feats)``, ``p = predictor(z)`` where the method has a predictor (under MIMV
    # the host step applies the predictor to the fused projection instead)
    def _project(self, out: Dict[str, Any], projector: nn.Module) -> Dict[str, Any]:
        z = projector(out["feats"])
        out["z"] = F.normalize(z, dim=-1) if self.normalize_projection else z
        return out

    def _predict(self, out: Dict[str, Any]) -> Dict[str, Any]:
        if getattr(self, "predictor", None) is not None and self.view_spec.scheme != "pairs":
            out["p"] = self.predictor(out["z"])
        return out

    @property
    def learnable_params(self) -> List[Dict[str, Any]]:
        groups = [{"name": "projector", "params": self.projector.parameters()}]
        if getattr(self, "predictor", None) is not None:
            groups.append({"name": "predictor", "params": self.predictor.parameters(),
                           "static_lr": self.predictor_static_lr})
        return super().learnable_params + groups  # type: ignore[misc]

    def forward(self, X: torch.Tensor) -> Dict[str, Any]:
        return self._predict(self._project(super().forward(X), self.projector))  # type: ignore

    def multicrop_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        out = super().multicrop_forward(X)  # type: ignore[misc]
        return self._predict(self._project(out, self.projector))

    # ------------------------------------------------------------ logging and the guard
    def record(self, values: Dict[str, Any]) -> None:
        """Values of this training step to log (epoch means across ranks, solo-learn's
        convention). They are logged at the end of the batch, after the training guard
        (``hosts/guard.py``) has seen the loss: a skipped batch logs none of them."""
        self.__dict__.setdefault("_step_logs", {}).update(values)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        logs = self.__dict__.pop("_step_logs", {})
        if logs:
            self.log_dict(logs, on_epoch=True, sync_dist=True)  # type: ignore[attr-defined]
        super().on_train_batch_end(outputs, batch, batch_idx)  # type: ignore[misc]

    def configure_callbacks(self) -> list:
        """The training guard, attached by whichever runner trains the method."""
        policy = self.cfg.get("nonfinite_loss", None) or "stop"  # type: ignore[attr-defined]
        return [*super().configure_callbacks(), NonFiniteGuard(str(policy))]  # type: ignore[misc]

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint["nonfinite_skipped"] = int(getattr(self, "nonfinite_skipped", 0))

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        self.nonfinite_skipped = int(checkpoint.get("nonfinite_skipped", 0))

    @classmethod
    def views(cls, cfg: Any) -> ViewSpec:
        """K large crops (``method_kwargs.num_views``) plus the small crops of
        ``augmentations``; or, with ``method_kwargs.mimv.enabled``, K MIMV pairs per anchor."""
        kwargs = cfg.method_kwargs
        mimv = kwargs.get("mimv")
        if mimv is not None and mimv.enabled:
            return ViewSpec(num_views=int(kwargs.num_views), scheme="pairs",
                            partner=mimv.partner, roles=mimv.roles, fusion=mimv.fusion)
        _, num_small = count_crops(cfg.augmentations)
        return ViewSpec(num_views=int(kwargs.num_views), num_small=num_small)

    @functools.cached_property
    def view_spec(self) -> ViewSpec:
        """The views of this run (``views`` of the config it was built from)."""
        return type(self).views(self.cfg)  # type: ignore[attr-defined]

    @property
    def loss_views(self) -> int:
        """Views per sample that ``kview_loss`` gets in ``out["z"]`` (K, or 2 under MIMV)."""
        return self.view_spec.loss_views

    def fused_dim(self, dim: int) -> int:
        """Width of a projection after the MIMV fusion (``concat`` doubles it)."""
        spec = self.view_spec
        return 2 * dim if spec.scheme == "pairs" and spec.fusion == "concat" else dim

    #: the smallest K the loss is defined for
    min_views = 2

    @classmethod
    def check_cfg(cls, cfg: Any) -> None:
        """K >= ``min_views``; the large crops of ``augmentations`` add up to K; small crops
        only where the loss takes them; MIMV pairs from one augmentation entry."""
        num_large, num_small = count_crops(cfg.augmentations)
        k = cfg.method_kwargs.num_views
        if cls.views(cfg).scheme == "pairs":
            check_pairs_cfg(cfg)
        elif k < cls.min_views:
            raise ConfigError(
                f"augmentations[*].num_crops: {cfg.method} needs at least {cls.min_views} large "
                f"crops (K >= {cls.min_views}), got K = {k} (method_kwargs.num_views)"
            )
        if num_large != k:
            raise ConfigError(
                f"method_kwargs.num_views: {k} but the augmentations give {num_large} large "
                "crops; make augmentations[*].num_crops of the large entries add up to K "
                "(the shipped augmentation files use ${method_kwargs.num_views})"
            )
        if num_small and not cls.accepts_small_crops:
            raise ConfigError(
                f"augmentations: {cfg.method} uses the K large crops only, got {num_small} "
                "small crops (entries whose crop_size differs from the first entry's); remove "
                "them or use a multi-crop method (mv_byol, mv_simsiam, mv_simclr)"
            )


class KViewMomentumMethod(KViewMethod):
    """A K-view method with an EMA target network (``momentum_projector`` beside the
    ``projector``)."""

    host_kind = "momentum"
    Momentum: Optional[type] = MomentumConfig

    @property
    def momentum_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return super().momentum_pairs + [(self.projector, self.momentum_projector)]  # type: ignore

    @torch.no_grad()
    def momentum_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        out = super().momentum_forward(X)  # type: ignore[misc]
        return self._project(out, self.momentum_projector)
