"""The solo-learn pull request written by ``python -m solo_multiview.upstream``.

These tests need a solo-learn checkout at 9187ea3: ``SOLO_LEARN_CHECKOUT=/path/to/solo-learn``
(it is copied to a temporary folder, never written). ``SOLO_LEARN_PYTHON`` names an interpreter
that has solo-learn's test dependencies and black (default: this one); it runs solo-learn's code
in subprocesses, so this process never imports solo-learn (its presence would switch the
project's default host). ``SOLO_LEARN_SUITE=1`` also runs solo-learn's whole test suite before and
after the contribution (about 40 minutes each on 2 CPU cores). Without ``SOLO_LEARN_CHECKOUT``
every test here is skipped.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHECKOUT = os.environ.get("SOLO_LEARN_CHECKOUT")
PYTHON = os.environ.get("SOLO_LEARN_PYTHON", sys.executable)
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.solo,
    pytest.mark.skipif(
        not CHECKOUT,
        reason="set SOLO_LEARN_CHECKOUT to a solo-learn checkout (9187ea3) to test the upstream "
        "contribution (and SOLO_LEARN_PYTHON to an interpreter with its test dependencies)",
    ),
]

NEW_FILES = [
    "solo/losses/mttv.py",
    "solo/losses/mv_simclr.py",
    "solo/losses/multiview_utils.py",
    "solo/data/long_tail.py",
    "solo/data/long_tail_authors.py",
    "solo/methods/mttv.py",
    "solo/methods/mv_simclr.py",
    "scripts/pretrain/cifar/mttv.yaml",
    "scripts/pretrain/cifar/mttv_lt.yaml",
    "scripts/pretrain/cifar/mv_simclr.yaml",
    "scripts/pretrain/cifar/mv_simclr_lt.yaml",
    "scripts/pretrain/cifar/augmentations/mttv.yaml",
    "scripts/pretrain/cifar/augmentations/symmetric_kview.yaml",
    "tests/losses/test_mttv.py",
    "tests/losses/test_mv_simclr.py",
    "tests/methods/test_mttv.py",
    "tests/methods/test_mv_simclr.py",
    "tests/data/test_long_tail.py",
    "docs/source/solo/methods/mttv.rst",
    "docs/source/solo/losses/mttv.rst",
    "PULL_REQUEST.md",
]
NEW_TESTS = [p for p in NEW_FILES if p.startswith("tests/")]


def _python_has(module: str) -> bool:
    return subprocess.run([PYTHON, "-c", f"import {module}"], capture_output=True).returncode == 0


def _run(args, cwd, timeout=1800, env=None):
    full_env = dict(os.environ, OMP_NUM_THREADS="2", **(env or {}))
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def _copy(dst: Path) -> Path:
    ignore = shutil.ignore_patterns(
        "__pycache__", "lightning_logs", "trained_models", "datasets", "PULL_REQUEST.md"
    )
    shutil.copytree(CHECKOUT, dst, ignore=ignore, symlinks=True)
    return dst


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return _copy(tmp_path_factory.mktemp("solo") / "pristine")


@pytest.fixture(scope="module")
def contribution(tmp_path_factory):
    from solo_multiview.upstream import write_contribution

    if not _python_has("black"):
        pytest.skip(f"{PYTHON} has no black (pip install black==23.12.0)")
    checkout = _copy(tmp_path_factory.mktemp("solo") / "contribution")
    report = write_contribution(checkout, black=f"{PYTHON} -m black")
    return checkout, report


def test_writes_solo_learn_layout(contribution):
    checkout, report = contribution
    for path in NEW_FILES:
        assert (checkout / path).is_file(), path
    assert {m.name for m in report.methods} >= {"mttv", "mv_simclr"}
    assert "main_pretrain.py" in report.written and "solo/methods/base.py" in report.written
    main = (checkout / "main_pretrain.py").read_text()
    assert 'assert cfg.method in ["wmse", "mae"]' not in main
    assert "supports_multiple_large_crops" in main
    assert '"mttv": MTTV' in (checkout / "solo/methods/__init__.py").read_text()
    assert "mttv_loss_func" in (checkout / "solo/losses/__init__.py").read_text()
    licence = (checkout / "solo/losses/simclr.py").read_text().split("\n\n")[0]
    for path in ("solo/losses/mttv.py", "solo/methods/mttv.py", "tests/methods/test_mttv.py"):
        assert (checkout / path).read_text().startswith(licence), path
    loss = (checkout / "solo/losses/mttv.py").read_text()
    assert "from ." not in loss and "solo_multiview" not in loss
    assert re.search(r"z_online \(torch\.Tensor\):", loss)  # solo-learn's docstring style
    text = (checkout / "PULL_REQUEST.md").read_text()
    for section in ("## What", "## Why", "## Results", "## How tested", "## Files"):
        assert section in text
    assert "files changed" in report.diff_stat


def test_second_run_changes_nothing(contribution):
    from solo_multiview.upstream import write_contribution

    checkout, _ = contribution
    again = write_contribution(checkout, black=f"{PYTHON} -m black")
    assert again.written == []


def test_refuses_methods_left_out_and_other_checkouts(tmp_path):
    from solo_multiview.methods import METHODS
    from solo_multiview.upstream import LEFT_OUT, SUPPORTED, ExportError, write_contribution

    assert set(SUPPORTED) | set(LEFT_OUT) == set(METHODS)
    with pytest.raises(ExportError, match="not written"):
        write_contribution(CHECKOUT, ["mv_dhel"], dry_run=True, format_code=False)
    with pytest.raises(ExportError, match="not a solo-learn checkout"):
        write_contribution(tmp_path, format_code=False)


def test_written_files_pass_black(contribution):
    checkout, report = contribution
    files = [p for p in report.written + report.unchanged if p.endswith(".py")]
    result = _run([PYTHON, "-m", "black", "--check", "--line-length", "100", *files], checkout)
    assert result.returncode == 0, result.stderr


LOSS_CHECK = textwrap.dedent(
    """
    import torch
    from solo.losses.mttv import mttv_loss_func
    from solo.losses.multiview_utils import BandFilter as SoloBand
    from solo.losses.mv_simclr import mv_simclr_loss_func
    from solo_multiview.losses.band_filter import BandFilter
    from solo_multiview.losses.mttv import mttv_infonce
    from solo_multiview.losses.mv_simclr import mv_nt_xent

    def same(a, b):
        return torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)

    def check(solo_fn, plugin_fn, make, kwargs_pairs):
        for solo_kwargs, plugin_kwargs in kwargs_pairs:
            for seed in range(3):
                torch.manual_seed(seed)
                args = make()
                leaves = [a for a in args if a.is_floating_point()]
                for a in leaves:
                    a.requires_grad_(True)
                loss_s, stats_s = solo_fn(*args, **solo_kwargs)
                (grad_s,) = torch.autograd.grad(loss_s, leaves[:1])
                loss_p, stats_p = plugin_fn(*args, **plugin_kwargs)
                (grad_p,) = torch.autograd.grad(loss_p, leaves[:1])
                assert same(loss_s, loss_p), (solo_fn.__name__, solo_kwargs, loss_s, loss_p)
                assert same(grad_s, grad_p), (solo_fn.__name__, solo_kwargs)
                assert stats_s.keys() == stats_p.keys()
                for k in stats_s:
                    assert same(stats_s[k], stats_p[k]), k

    def band(cls, *a):
        return None if not a else cls(*a)

    mttv_settings = [
        (dict(temperature=t, band=band(SoloBand, *b), form=f),
         dict(temperature=t, band=band(BandFilter, *b), form=f))
        for t in (0.3, 0.1)
        for b in ((), (0.1, 0.9), (0.2, 0.8, "low_only"))
        for f in ("principled", "official")
    ]
    check(mttv_loss_func, mttv_infonce,
          lambda: (torch.randn(24, 16), torch.randn(24, 16)), mttv_settings)

    simclr_settings = [
        (dict(temperature=t, band=band(SoloBand, *b)),
         dict(temperature=t, band=band(BandFilter, *b)))
        for t in (0.2, 0.5)
        for b in ((), (0.1, 0.9))
    ]
    for k in (2, 4):
        check(mv_simclr_loss_func, mv_nt_xent,
              lambda: (torch.randn(8 * k, 16), torch.arange(8).repeat(k)), simclr_settings)
    print("losses equal")
    """
)


def test_exported_losses_equal_the_plugin(contribution):
    checkout, _ = contribution
    if not _python_has("torch"):
        pytest.skip(f"{PYTHON} has no torch")
    env = {"PYTHONPATH": os.pathsep.join([str(checkout), str(ROOT)])}
    result = _run([PYTHON, "-c", LOSS_CHECK], checkout, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "losses equal" in result.stdout


def _needs_solo_deps():
    for module in ("lightning", "hydra", "timm", "einops", "torchvision", "sklearn"):
        if not _python_has(module):
            pytest.skip(
                f"{PYTHON} lacks {module}: set SOLO_LEARN_PYTHON to an interpreter with "
                "solo-learn's test dependencies"
            )


def test_new_solo_learn_tests_pass(contribution):
    _needs_solo_deps()
    checkout, _ = contribution
    result = _run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NEW_TESTS], checkout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def _image_folder(root: Path, classes: int = 10, per_class: int = 16) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 4)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, overrides, loss",
    [
        ("mttv.yaml", [], "train_mttv_loss_step"),
        (
            "mttv_lt.yaml",
            ["method_kwargs.num_views=4", "data.long_tail.imbalance_ratio=4"],
            "train_mttv_loss_step",
        ),
        ("mv_simclr.yaml", ["method_kwargs.num_views=4"], "train_nce_loss_step"),
    ],
)
def test_main_pretrain_runs_the_new_configs(contribution, tmp_path, config, overrides, loss):
    """solo-learn's own main_pretrain.py, the new configs, K = 4, a few CPU steps."""
    _needs_solo_deps()
    checkout, _ = contribution
    data = _image_folder(tmp_path / "data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = [
        PYTHON,
        str(checkout / "main_pretrain.py"),
        "--config-path",
        str(checkout / "scripts/pretrain/cifar"),
        "--config-name",
        config,
        *overrides,
        "data.dataset=custom",
        f"data.train_path={data / 'train'}",
        f"data.val_path={data / 'val'}",
        "data.num_workers=0",
        "optimizer.batch_size=8",
        "accelerator=cpu",
        "devices='1'",
        "strategy=auto",
        "precision=32",
        "sync_batchnorm=False",
        "wandb.enabled=False",
        "checkpoint.enabled=False",
        "auto_resume.enabled=False",
        "max_epochs=1",
        "+limit_train_batches=2",
        "+limit_val_batches=1",
        "+log_every_n_steps=1",
        "+enable_progress_bar=False",
    ]
    result = _run(args, run_dir, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (metrics,) = run_dir.glob("lightning_logs/*/metrics.csv")
    values = [float(r[loss]) for r in csv.DictReader(metrics.open()) if r.get(loss)]
    assert len(values) == 2 and all(v == v and abs(v) < 1e6 for v in values)


def _suite(checkout: Path) -> dict:
    result = _run(
        [PYTHON, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "-rA"],
        checkout,
        timeout=5400,
    )
    outcome = {}
    for line in result.stdout.splitlines():
        m = re.match(r"^(PASSED|FAILED|ERROR|SKIPPED) (\S+)", line)
        if m:
            outcome[m.group(2)] = m.group(1)
    return outcome


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("SOLO_LEARN_SUITE") != "1",
    reason="set SOLO_LEARN_SUITE=1 to run solo-learn's whole suite (~80 min)",
)
def test_solo_learn_suite_unchanged(pristine, contribution):
    _needs_solo_deps()
    checkout, _ = contribution
    before, after = _suite(pristine), _suite(checkout)
    assert before, "solo-learn's suite reported no test"
    changed = {
        t: (s, after.get(t)) for t, s in before.items() if s == "PASSED" and after.get(t) != s
    }
    assert not changed, changed
    new = {t: s for t, s in after.items() if t not in before}
    assert new and all(s == "PASSED" for s in new.values()), new
