"""Linear probe on cached (frozen) features.

Model: ``logits = W ((x - mu) / sigma) + b``. With ``standardize`` the per-dimension ``mu`` and
``sigma`` (population std; dimensions with ``sigma < 1e-6`` get ``sigma = 1``) are fitted on the
training features, otherwise ``mu = 0, sigma = 1``. ``W ~ N(0, 0.01^2)``, ``b = 0``.

Loss: cross-entropy ``-log softmax(logits)_y``, averaged over the mini-batch; with
``balanced_loss`` each sample is weighted by ``w_y = N / (C' * n_y)`` (inverse class frequency,
``C'`` = classes present in the training labels, ``n_y`` their counts) and the batch loss is the
weighted mean ``sum_i w_i l_i / sum_i w_i`` (``torch.nn.CrossEntropyLoss(weight=...)``).

Optimisation: SGD (momentum, optional Nesterov) or AdamW, ``epochs`` passes over shuffled
mini-batches, learning rate annealed by a cosine from ``lr`` to 0, per step
(``lr_interval: step``, default): ``lr_t = lr * (1 + cos(pi * t / T_total)) / 2``, or per epoch
(``lr_interval: epoch``, constant within an epoch, the MTTV authors' probe, their
``utils.adjust_learning_rate``): ``lr_e = lr * (1 + cos(pi * e / epochs)) / 2`` for epoch
``e = 0 .. epochs - 1``. Everything random (init, shuffling) comes from
a ``torch.Generator`` seeded with ``seed``; the global RNG is not touched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from solo_multiview.config.schema import setting

OPTIMIZERS = ("sgd", "adamw")
LR_INTERVALS = ("step", "epoch")


@dataclass
class LinearProbeConfig:
    """Hyper-parameters of ``train_linear_probe`` (defaults: a common linear-eval recipe)."""

    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    standardize: bool = True
    balanced_loss: bool = False
    seed: int = 0
    lr_interval: str = "step"

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"linear probe optimizer: unknown {self.optimizer!r}; choose one of "
                             f"{list(OPTIMIZERS)}")
        for key in ("epochs", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"linear probe {key}: must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ValueError(f"linear probe lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"linear probe weight_decay: must be >= 0, got {self.weight_decay}")
        if self.lr_interval not in LR_INTERVALS:
            raise ValueError(f"linear probe lr_interval: unknown {self.lr_interval!r}; choose "
                             f"one of {list(LR_INTERVALS)}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)



@dataclass
class ProbeOptimizerConfig:
    """The ``optimizer`` node of main_linear.py, declared here beside the probe it trains
    (``run_linear.probe_config`` turns it into a ``LinearProbeConfig``, whose defaults these
    are)."""

    name: str = setting(LinearProbeConfig.optimizer, "sgd (momentum, optional Nesterov) | adamw",
                        choices=OPTIMIZERS)
    batch_size: int = setting(LinearProbeConfig.batch_size, "probe mini-batch size", minimum=1)
    lr: float = setting(LinearProbeConfig.lr, "initial learning rate, cosine-annealed to 0 "
                        "(per lr_interval; not scaled by the batch size)", above=0)
    weight_decay: float = setting(LinearProbeConfig.weight_decay, "weight decay of W and b",
                                  minimum=0)
    momentum: float = setting(LinearProbeConfig.momentum, "SGD momentum (sgd only)", minimum=0,
                              below=1)
    nesterov: bool = setting(LinearProbeConfig.nesterov, "Nesterov momentum (sgd only; needs "
                             "momentum > 0)")
    lr_interval: str = setting(LinearProbeConfig.lr_interval, "cosine annealing per step, or "
                               "per epoch (constant within an epoch: the MTTV authors' probe)",
                               choices=LR_INTERVALS)


def probe_scheduler(
    opt: torch.optim.Optimizer, config: LinearProbeConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The probe's cosine schedule (module docstring), stepped after every optimizer step in
    both intervals."""
    if config.lr_interval == "step":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=config.epochs * steps_per_epoch)
    per_epoch = max(1, int(steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: (1 + math.cos(math.pi * (t // per_epoch) / config.epochs)) / 2)

class LinearProbe(nn.Module):
    """Standardisation buffers plus the trained ``nn.Linear`` head."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head((features.to(self.mean.dtype) - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Logits ``(N, C)`` for ``features`` ``(N, D)``, on the features' device, in batches."""
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(f"linear probe features: expected (N, {self.mean.shape[0]}), got "
                             f"{tuple(features.shape)}")
        device = self.mean.device
        out = [self(features[i:i + batch_size].to(device))
               for i in range(0, features.shape[0], batch_size)]
        if not out:
            return torch.empty(0, self.head.out_features, device=features.device)
        return torch.cat(out).to(features.device)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``w_c = N / (C' n_c)`` for classes with ``n_c > 0`` (``C'`` of them), 0 for absent ones."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64, device=labels.device)
    weights[present] = labels.numel() / (present.sum() * counts[present])
    return weights.float()


def train_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: Optional[int] = None,
    config: Optional[LinearProbeConfig] = None,
    device: Optional[torch.device | str] = None,
    **overrides: Any,
) -> LinearProbe:
    """Fits a linear classifier on ``(features (N, D), labels (N,))``; see the module docstring.

    Args:
        num_classes: ``C``; defaults to ``max(labels) + 1``.
        config: hyper-parameters; ``overrides`` replace individual fields
            (``train_linear_probe(x, y, epochs=10, optimizer="adamw")``).
        device: where to train; defaults to ``features``' device.

    Returns:
        the trained ``LinearProbe`` in eval mode: ``probe.head`` is the ``nn.Linear`` and
        ``probe.predict(features)`` gives logits.
    """
    cfg = LinearProbeConfig(**{**(config.to_dict() if config else {}), **overrides})
    cfg.validate()
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"linear probe features: expected a non-empty (N, D) tensor, got "
                         f"{tuple(features.shape)}")
    labels = torch.as_tensor(labels)
    if labels.shape != (features.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"linear probe labels: expected ({features.shape[0]},) integer labels, "
                         f"got {tuple(labels.shape)} {labels.dtype}")
    device = torch.device(device) if device is not None else features.device
    x = features.to(device, torch.float32)
    y = labels.to(device).long()
    if num_classes is None:
        num_classes = int(y.max()) + 1
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"linear probe labels: must lie in [0, {num_classes}), got range "
                         f"[{int(y.min())}, {int(y.max())}]")

    gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed))
    with torch.random.fork_rng(devices=[]):  # nn.Linear's default init draws from the global RNG
        probe = LinearProbe(x.shape[1], num_classes)
    with torch.no_grad():
        probe.head.weight.copy_(torch.randn(probe.head.weight.shape, generator=gen) * 0.01)
        probe.head.bias.zero_()
    probe.to(device)
    if cfg.standardize:
        probe.mean.copy_(x.mean(dim=0))
        std = x.std(dim=0, unbiased=False)
        probe.std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))

    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            probe.head.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(probe.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-x.shape[0] // cfg.batch_size)
    sched = probe_scheduler(opt, cfg, steps_per_epoch)
    weight = class_weights(y, num_classes) if cfg.balanced_loss else None

    probe.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(x.shape[0], generator=gen).to(device)
        for start in range(0, x.shape[0], cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            loss = F.cross_entropy(probe(x[idx]), y[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return probe.eval()
