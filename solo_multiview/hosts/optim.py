"""Optimizers and the warm-up + cosine schedule of the built-in host (solo-learn's semantics)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from timm.optim import Lars
from torch import nn

from solo_multiview.config.schema import ConfigError, check, setting

OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
SCHEDULERS = ("warmup_cosine", "step", "none")
LR_SCALING = ("linear", "none")
NO_WD_SUFFIX = "_no_wd"


@dataclass
class OptimizerConfig:
    """``optimizer.*`` (solo-learn's keys plus ``lr_scaling``); ``kwargs`` are the chosen
    optimizer's own (:data:`OPTIMIZER_KWARGS`)."""

    name: str = setting(help="the optimizer", choices=OPTIMIZERS)
    batch_size: int = setting(help="images per device per step", minimum=1)
    lr: float = setting(help="learning rate (scaled by batch_size * devices * nodes / 256 "
                        "unless lr_scaling: none)", above=0)
    weight_decay: float = setting(help="weight decay", minimum=0)
    classifier_lr: float = setting(0.1, "learning rate of the online linear classifier",
                                   minimum=0)
    lr_scaling: str = setting("linear", "solo-learn's linear scaling rule, or none",
                              choices=LR_SCALING)
    exclude_bias_n_norm_wd: bool = setting(False, "no weight decay on biases and norm layers")
    lr_scale_factor: Optional[float] = setting(None, "derived: the factor lr was scaled by (a "
                                               "config that has it is not scaled again)")
    kwargs: Dict[str, Any] = setting({}, "the optimizer's own arguments (sgd: momentum, "
                                     "nesterov; lars: momentum, eta, clip_lr, "
                                     "exclude_bias_n_norm; adam/adamw: betas, eps)")


@dataclass
class SGDKwargs:
    momentum: float = setting(0.9, "momentum", minimum=0, below=1)
    nesterov: bool = setting(False, "Nesterov momentum")


@dataclass
class LARSKwargs:
    momentum: float = setting(0.9, "momentum", minimum=0, below=1)
    eta: float = setting(1e-3, "trust coefficient", above=0)
    clip_lr: bool = setting(False, "clip the adaptive lr at the base lr")
    exclude_bias_n_norm: bool = setting(False, "no trust ratio and no weight decay on biases "
                                        "and norm layers")


@dataclass
class AdamKwargs:
    betas: List[float] = setting([0.9, 0.999], "Adam's betas")
    eps: float = setting(1e-8, "Adam's epsilon", above=0)


#: the declared ``optimizer.kwargs`` of each optimizer
OPTIMIZER_KWARGS = {"sgd": SGDKwargs, "lars": LARSKwargs, "adam": AdamKwargs,
                    "adamw": AdamKwargs}


def optimizer_kwargs(name: str, given: Dict[str, Any]) -> Dict[str, Any]:
    """``optimizer.kwargs`` checked against the optimizer's declaration, defaults filled
    (ConfigError naming ``optimizer.kwargs.<key>``)."""
    cls = OPTIMIZER_KWARGS[name]
    checked = check(cls, given, prefix="optimizer.kwargs")
    full = {**vars(cls()), **checked}
    betas = full.get("betas")
    if betas is not None and (len(betas) != 2 or not all(0 <= b < 1 for b in betas)):
        raise ConfigError(f"optimizer.kwargs.betas: got {betas}; expected two numbers in [0, 1)")
    return full


@dataclass
class SchedulerConfig:
    """``scheduler.*`` (solo-learn's keys)."""

    name: str = setting("warmup_cosine", "the learning-rate schedule", choices=SCHEDULERS)
    warmup_epochs: float = setting(10, "linear warm-up length in epochs", minimum=0)
    warmup_start_lr: float = setting(3e-5, "learning rate at the start of the warm-up",
                                     minimum=0)
    min_lr: float = setting(0.0, "final learning rate of the cosine", minimum=0)
    interval: str = setting("step", "update the lr every step or every epoch",
                            choices=("step", "epoch"))
    lr_decay_steps: Optional[List[int]] = setting(None, "step scheduler: epochs at which the "
                                                  "lr is divided by 10")


def split_bias_and_norm(groups: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Moves 1-d parameters (biases, norm scales) of every group into a twin group without
    weight decay, as solo-learn's ``exclude_bias_n_norm_wd`` does."""
    result: List[Dict[str, Any]] = []
    for group in groups:
        params = list(group["params"])
        if group.get("weight_decay") == 0:
            result.append({**group, "params": params})
            continue
        decayed = [p for p in params if p.ndim > 1]
        exempt = [p for p in params if p.ndim <= 1]
        if decayed:
            result.append({**group, "params": decayed})
        if exempt:
            result.append({**group, "name": f"{group.get('name', '')}{NO_WD_SUFFIX}",
                           "params": exempt, "weight_decay": 0.0})
    return result


def build_optimizer(
    name: str, groups: Sequence[Dict[str, Any]], lr: float, weight_decay: float,
    kwargs: Dict[str, Any],
) -> torch.optim.Optimizer:
    """``sgd`` | ``lars`` | ``adam`` | ``adamw`` over parameter groups.

    LARS is timm's; solo-learn's ``eta`` maps to timm's ``trust_coeff`` and ``clip_lr`` to
    ``trust_clip``. With ``exclude_bias_n_norm`` the 1-d parameters get their own groups without
    weight decay, and timm skips the trust ratio for groups without weight decay
    (``always_adapt=False``), which is solo-learn's exclusion."""
    kwargs = dict(kwargs)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay, **kwargs)
    if name == "lars":
        exclude = kwargs.pop("exclude_bias_n_norm", False)
        trust = kwargs.pop("eta", 1e-3)
        clip = kwargs.pop("clip_lr", False)
        if exclude:
            groups = split_bias_and_norm(groups)
        return Lars(groups, lr=lr, weight_decay=weight_decay, trust_coeff=trust,
                    trust_clip=clip, always_adapt=not exclude, **kwargs)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, **kwargs)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **kwargs)
    raise ValueError(f"optimizer.name: unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def warmup_cosine_factor(
    base_lr: float, warmup_steps: int, total_steps: int, warmup_start_lr: float, min_lr: float
) -> Callable[[int], float]:
    """Multiplier of ``base_lr`` at step t:

        lr(t) = warmup_start_lr + (base_lr - warmup_start_lr) * t / W               for t < W
        lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2  for t >= W

    with W warm-up steps and T total steps (solo-learn's LinearWarmupCosineAnnealingLR)."""

    def factor(step: int) -> float:
        if base_lr == 0:
            return 0.0
        if step < warmup_steps:
            lr = warmup_start_lr + (base_lr - warmup_start_lr) * step / warmup_steps
        else:
            span = max(1, total_steps - warmup_steps)
            progress = min(1.0, (step - warmup_steps) / span)
            lr = min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2
        return lr / base_lr

    return factor


def schedule_lengths(
    warmup_epochs: float, interval: str, batches_per_epoch: float, accumulate: int,
    total_steps: int, max_epochs: int,
) -> tuple[int, int]:
    """(warm-up length, schedule length) in the scheduler's unit (optimizer steps for
    ``interval: step``, epochs for ``interval: epoch``), from the steps an epoch really takes.

    An epoch is ``ceil(batches_per_epoch / accumulate)`` optimizer steps (Lightning also steps
    on an epoch's last, partial accumulation). ``total_steps`` is Lightning's
    ``estimated_stepping_batches``, which a ``max_steps`` bound already caps: dividing it by
    ``max_epochs`` instead would give a run bounded by ``max_steps`` under a large ``max_epochs``
    no warm-up at all. Without a known epoch length (an iterable dataset) the epoch is
    ``total_steps / max_epochs``, the only estimate there is."""
    if math.isfinite(batches_per_epoch) and batches_per_epoch > 0:
        steps_per_epoch = float(math.ceil(batches_per_epoch / max(1, accumulate)))
    else:
        steps_per_epoch = total_steps / max(1, max_epochs)
    steps_per_epoch = max(steps_per_epoch, 1.0)
    if interval == "step":
        return int(warmup_epochs * steps_per_epoch), int(total_steps)
    epochs_run = math.ceil(total_steps / steps_per_epoch)
    return int(warmup_epochs), int(min(max_epochs, epochs_run) if max_epochs > 0 else epochs_run)


def build_scheduler(
    optimizer: torch.optim.Optimizer, static_groups: Sequence[bool], *, name: str,
    warmup_steps: int, total_steps: int, warmup_start_lr: float, min_lr: float,
    milestones: Sequence[int] | None = None,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule; groups flagged in ``static_groups`` keep their lr."""
    if name == "none":
        return None
    if name == "step":
        if not milestones:
            raise ValueError("scheduler.lr_decay_steps: the step scheduler needs a list of epochs")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones))
    if name != "warmup_cosine":
        raise ValueError(f"scheduler.name: unknown scheduler {name!r}; choose one of {SCHEDULERS}")
    lambdas = []
    for group, static in zip(optimizer.param_groups, static_groups):
        if static:
            lambdas.append(lambda step: 1.0)
        else:
            start = warmup_start_lr if warmup_steps > 0 else group["lr"]
            lambdas.append(
                warmup_cosine_factor(group["lr"], warmup_steps, total_steps, start, min_lr)
            )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def ema_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online for every parameter (paired in order, as
    ``zip(online.parameters(), target.parameters())``; buffers are not touched), as two fused
    multi-tensor operations (``torch._foreach_mul_`` then ``torch._foreach_add_``: the same
    arithmetic as ``p.mul_(tau).add_(o, alpha=1 - tau)`` per parameter, a few kernel launches
    instead of two per parameter)."""
    pairs = list(zip(online.parameters(), target.parameters()))
    if not pairs:
        return
    with torch.no_grad():
        targets = [p_target for _, p_target in pairs]
        torch._foreach_mul_(targets, tau)
        torch._foreach_add_(targets, [p_online.detach() for p_online, _ in pairs],
                            alpha=1 - tau)


def cosine_tau(base_tau: float, final_tau: float, step: int, max_steps: int) -> float:
    """tau(t) = final - (final - base) * (cos(pi * t / T) + 1) / 2 (BYOL's schedule)."""
    return final_tau - (final_tau - base_tau) * (math.cos(math.pi * step / max_steps) + 1) / 2
