"""The built-in host's schedules (hosts/optim.py): the warm-up + cosine learning rate, its
lengths however a run is bounded, and the EMA momentum schedule, each against its formula
written out here, and both as a real run applies them."""

from __future__ import annotations

import math
from typing import List

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from solo_multiview.hosts.optim import (
    build_scheduler,
    cosine_tau,
    schedule_lengths,
    warmup_cosine_factor,
)
from solo_multiview.training.pretrain import fit, prepare_pretrain
from tests.helpers import tiny_cfg


def reference_lr(step: int, base: float, warmup: int, total: int, start: float,
                 floor: float) -> float:
    """Linear from ``start`` to ``base`` over ``warmup`` steps, then half a cosine down to
    ``floor`` at ``total`` (and ``floor`` after it)."""
    if step < warmup:
        return start + (base - start) * step / warmup
    done = min(step - warmup, total - warmup) / (total - warmup)
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * done))


@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (4, 5)])
def test_warmup_cosine_follows_its_formula(warmup, total):
    base, start, floor = 0.8, 0.01, 0.002
    factor = warmup_cosine_factor(base, warmup, total, start, floor)
    for step in range(total + 3):
        expected = reference_lr(step, base, warmup, total, start, floor)
        assert base * factor(step) == pytest.approx(expected, rel=1e-12, abs=1e-15), step
    assert base * factor(0) == pytest.approx(start if warmup else base)
    assert base * factor(total) == pytest.approx(floor)


def test_a_zero_learning_rate_stays_zero():
    assert warmup_cosine_factor(0.0, 2, 10, 0.01, 0.0)(1) == 0.0


def test_scheduler_leaves_static_groups_alone_and_skips_a_zero_warmup():
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizer = torch.optim.SGD([{"params": [params[0]], "lr": 0.4},
                                 {"params": [params[1]], "lr": 0.1}], lr=0.4)
    scheduler = build_scheduler(optimizer, [False, True], name="warmup_cosine", warmup_steps=0,
                                total_steps=4, warmup_start_lr=0.01, min_lr=0.0)
    lrs = []
    for _ in range(4):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    # no warm-up: the cosine starts at the base lr, not at warmup_start_lr
    assert [lr[0] for lr in lrs] == pytest.approx(
        [reference_lr(t, 0.4, 0, 4, 0.01, 0.0) for t in range(4)])
    assert [lr[1] for lr in lrs] == [0.1] * 4
    assert build_scheduler(optimizer, [False, False], name="none", warmup_steps=0,
                           total_steps=4, warmup_start_lr=0.0, min_lr=0.0) is None
    step = build_scheduler(optimizer, [False, False], name="step", warmup_steps=0,
                           total_steps=4, warmup_start_lr=0.0, min_lr=0.0, milestones=[2])
    assert step.milestones == {2: 1}
    with pytest.raises(ValueError, match="scheduler.lr_decay_steps"):
        build_scheduler(optimizer, [False, False], name="step", warmup_steps=0, total_steps=4,
                        warmup_start_lr=0.0, min_lr=0.0, milestones=[])


@pytest.mark.parametrize("args,expected", [
    # (warmup_epochs, interval, batches per epoch, accumulate, total steps, max_epochs)
    ((2, "step", 10, 1, 100, 10), (20, 100)),           # bounded by max_epochs
    ((1, "step", 10, 1, 30, 10_000), (10, 30)),         # bounded by max_steps: still 10
    ((1, "step", 10, 4, 9, 10_000), (3, 9)),            # ceil(10 / 4) optimizer steps an epoch
    ((0.5, "step", 7, 1, 70, 10), (3, 70)),             # fractional epochs round down
    ((2, "epoch", 10, 1, 100, 10), (2, 10)),
    ((1, "epoch", 10, 1, 25, 10_000), (1, 3)),          # 25 steps are 3 epochs, not 10,000
    ((1, "step", float("inf"), 1, 50, 5), (10, 50)),    # unknown epoch length: total / epochs
])
def test_schedule_lengths_count_real_optimizer_steps(args, expected):
    assert schedule_lengths(*args) == expected


class LearningRates(Callback):
    def __init__(self):
        self.lrs: List[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_a_max_steps_bounded_run_warms_up_for_one_real_epoch(tmp_path):
    # 3 batches an epoch, 6 steps, max_epochs far larger (as benchmarks/k_view_study.py runs)
    run = prepare_pretrain(tiny_cfg(tmp_path, overrides=[
        "max_steps=6", "max_epochs=10000", "+limit_train_batches=3",
        "++scheduler.interval=step", "++scheduler.warmup_epochs=1",
        "++scheduler.warmup_start_lr=0.001", "++scheduler.min_lr=0.0",
        "++optimizer.lr_scaling=none", "optimizer.lr=0.3", "++limit_val_batches=0"]))
    recorder = LearningRates()
    run.trainer.callbacks.append(recorder)
    fit(run)
    assert run.trainer.global_step == 6
    assert recorder.lrs == pytest.approx(
        [reference_lr(t, 0.3, 3, 6, 0.001, 0.0) for t in range(6)], rel=1e-9)
    assert recorder.lrs[0] == pytest.approx(0.001) and recorder.lrs[3] == pytest.approx(0.3)


def test_cosine_tau_rises_from_base_to_final():
    base, final, steps = 0.9, 1.0, 8
    taus = [cosine_tau(base, final, t, steps) for t in range(steps + 1)]
    for t, tau in enumerate(taus):
        expected = final - (final - base) * (math.cos(math.pi * t / steps) + 1) / 2
        assert tau == pytest.approx(expected, rel=0, abs=1e-12)
    assert taus[0] == pytest.approx(base) and taus[-1] == pytest.approx(final)
    # a quarter of the way the schedule is still near base (a reversed one would be near final)
    assert taus[2] == pytest.approx(base + (final - base) * (1 - math.sqrt(0.5)) / 2)
    assert all(a < b for a, b in zip(taus, taus[1:]))


class Taus(Callback):
    def __init__(self):
        self.taus: List[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.taus.append(pl_module.momentum_updater.cur_tau)


def test_a_run_applies_the_ema_schedule_step_by_step(tmp_path):
    run = prepare_pretrain(tiny_cfg(tmp_path, method="mv_byol", overrides=[
        "max_steps=4", "+method_kwargs.pred_hidden_dim=16", "+momentum.base_tau=0.9",
        "+momentum.final_tau=1.0", "++limit_val_batches=0"]))
    recorder = Taus()
    run.trainer.callbacks.append(recorder)
    fit(run)
    # the tau of step t is the schedule at t of the run's 4 optimizer steps
    assert recorder.taus == pytest.approx([cosine_tau(0.9, 1.0, t, 4) for t in range(4)],
                                          abs=1e-12)
    assert recorder.taus[1] < 0.95 < recorder.taus[3]
