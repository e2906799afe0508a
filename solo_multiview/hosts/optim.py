"""Optimizers and the warm-up + cosine schedule of the built-in host (solo-learn's semantics)."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Sequence

import torch
from timm.optim import Lars
from torch import nn

OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
SCHEDULERS = ("warmup_cosine", "step", "none")
NO_WD_SUFFIX = "_no_wd"


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
    """target <- tau * target + (1 - tau) * online, parameter by parameter."""
    with torch.no_grad():
        for p_online, p_target in zip(online.parameters(), target.parameters()):
            p_target.mul_(tau).add_(p_online.detach(), alpha=1 - tau)


def cosine_tau(base_tau: float, final_tau: float, step: int, max_steps: int) -> float:
    """tau(t) = final - (final - base) * (cos(pi * t / T) + 1) / 2 (BYOL's schedule)."""
    return final_tau - (final_tau - base_tau) * (math.cos(math.pi * step / max_steps) + 1) / 2
