"""Writes the contribution into a solo-learn checkout, reports the diff and the PR description."""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from solo_multiview.data import longtail, longtail_authors
from solo_multiview.losses import _common, band_filter, distributed

from . import configs, edits, solo_tests, templates
from .methods import LEFT_OUT, SUPPORTED, SoloMethod, render_docs, render_method, resolve
from .source import (
    ExportError,
    ModuleExport,
    assemble,
    export_helpers,
    licence_header,
    names_imported_relatively,
)

HELPER_MODULES = (_common, distributed, band_filter)
HELPERS_TARGET = "solo.losses.multiview_utils"
REFERENCES = {
    "_common": HELPERS_TARGET,
    "distributed": HELPERS_TARGET,
    "band_filter": HELPERS_TARGET,
    "longtail": "solo.data.long_tail",
    "longtail_authors": "solo.data.long_tail_authors",
}
PR_FILE = "PULL_REQUEST.md"

HELPERS_DOC = """Shared pieces of the multi-view losses (solo.losses.mttv, solo.losses.mv_simclr).

Generated from solo-multiview's losses/_common.py, losses/distributed.py and
losses/band_filter.py. ``BandFilter`` is the extreme-feature filter of MTTV / MIMV
(https://arxiv.org/abs/2509.08469): similarity entries whose magnitude lies outside
``[low, high]`` are removed from the softmax sums (``mode="band"``), or those under ``low``
(``mode="low_only"``, the paper's ImageNet variant); ``None`` where a loss takes a band means no
filter.

The losses score *local anchors against global candidates*: each rank compares its own rows with
the embeddings of all ranks. ``gather_with_grad`` sums, in its backward pass, the gradients every
rank sends to a slice (as solo.utils.misc.gather does); ``gather_no_grad`` gathers labels and
stop-gradient targets. A loss that averages over a data-dependent subset of its anchors (the band
filter drops anchors whose positive leaves the band) divides by the *global* number of kept
anchors (``global_weighted_mean``): with ``n_r`` kept anchors on rank ``r`` and ``S_r`` the sum of
their terms, ``loss_r = W * S_r / max(sum_q n_q, 1)``, so the rank-averaged loss and DDP's
averaged gradient equal the single-process mean over the global batch."""

LONG_TAIL_DOC_NOTE = """

Generated from solo-multiview's data/longtail.py (``data.long_tail`` in solo-learn's configs;
:func:`long_tail_subset` and :func:`long_tail_files` apply it to a dataset or a file list)."""


@dataclass
class Report:
    checkout: Path
    methods: List[SoloMethod]
    written: List[str] = field(default_factory=list)  # paths whose content changed
    unchanged: List[str] = field(default_factory=list)
    diff_stat: str = ""
    description: str = ""
    formatted: bool = True


# --------------------------------------------------------------------------- formatting
def black_command(spec: Optional[str] = None) -> Optional[List[str]]:
    """The command that runs black: ``spec`` (e.g. "/venv/bin/python -m black"), else this
    interpreter's black, else ``black`` on PATH; None when none is found."""
    if spec:
        return spec.split()
    if importlib.util.find_spec("black") is not None:
        return [sys.executable, "-m", "black"]
    found = shutil.which("black")
    return [found] if found else None


def format_python(text: str, command: Optional[List[str]]) -> str:
    """``text`` as black formats it at solo-learn's settings (line length 100)."""
    if command is None:
        return text
    result = subprocess.run(
        [*command, "-q", "--line-length", "100", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ExportError(f"black failed ({' '.join(command)}):\n{result.stderr}\n{text[:2000]}")
    return result.stdout


# --------------------------------------------------------------------------- contents
def _module_path(dotted: str) -> str:
    return dotted.replace(".", "/") + ".py"


def new_files(checkout: Path, methods: Sequence[SoloMethod]) -> Dict[str, str]:
    """Path -> content of every file the contribution adds."""
    header = licence_header(str(checkout / "solo" / "losses" / "simclr.py"))
    files: Dict[str, str] = {}

    # losses: the plugin's modules, transformed; their relative imports -> one helper module
    targets = {m.__name__: HELPERS_TARGET for m in HELPER_MODULES}
    exports = [
        ModuleExport(m.loss_module, f"solo.losses.{m.module}", renames=dict(m.loss_renames))
        for m in methods
    ]
    for target, text in assemble(exports, header, REFERENCES, targets).items():
        files[_module_path(target)] = text
    needed = sorted(
        {
            name
            for m in methods
            for name, source in names_imported_relatively(m.loss_module).items()
            if source in targets
        }
        | {"BandFilter"}
    )
    files[_module_path(HELPERS_TARGET)] = export_helpers(
        HELPER_MODULES, needed, header, HELPERS_DOC, REFERENCES
    )

    # the long-tail selection: the plugin's data/longtail.py, transformed, plus the solo-learn
    # entry points (a dataset, a file list)
    lt_targets = {longtail_authors.__name__: "solo.data.long_tail_authors"}
    lt_files = assemble(
        [
            ModuleExport(longtail_authors, "solo.data.long_tail_authors"),
            ModuleExport(
                longtail,
                "solo.data.long_tail",
                names=[
                    "PROFILES",
                    "CLASS_ORDERS",
                    "SELECTIONS",
                    "DEFAULTS",
                    "counts_by_rank",
                    "class_order",
                    "select_per_class",
                    "load_index_file",
                    "long_tail_indexes",
                ],
                comments={"DEFAULTS": "#: values used for keys missing from ``data.long_tail``"},
                docstring=(longtail.__doc__ or "").rstrip() + LONG_TAIL_DOC_NOTE,
                extra_imports=[
                    "from typing import List, Tuple",
                    "from torch.utils.data import Dataset",
                ],
                appendix=templates.LONG_TAIL_DATASET,
            ),
        ],
        header,
        REFERENCES,
        lt_targets,
    )
    for target, text in lt_files.items():
        files[_module_path(target)] = text

    for m in methods:
        files[f"solo/methods/{m.module}.py"] = render_method(m, header)
        files[f"tests/losses/test_{m.module}.py"] = m.loss_test.substitute(header=header)
        files[f"tests/methods/test_{m.module}.py"] = m.method_test.substitute(header=header)
        files.update(render_docs(m))
        files.update(configs.config_files(m))
    files["tests/data/test_long_tail.py"] = solo_tests.LONG_TAIL_TEST.substitute(header=header)
    files["docs/source/solo/losses/multiview_utils.rst"] = templates.HELPERS_DOC.substitute()
    return files


def format_snippet(lines: Sequence[str], indent: int, command: Optional[List[str]]) -> List[str]:
    """Code lines to be inserted at ``indent`` spaces, formatted by black as it would format them
    in place (inside a block at that depth), so that a second run finds them unchanged."""
    if command is None:
        return list(lines)
    depth = indent // 4
    wrapper = "".join("    " * d + "if True:\n" for d in range(depth))
    body = "".join(("    " * depth + line if line else "") + "\n" for line in lines)
    formatted = format_python(wrapper + body, command).split("\n")[depth:]
    return [
        line[indent:] if line.startswith(" " * indent) else line.strip()
        for line in formatted
        if line.strip() or line == ""
    ][: -1 or None]


def edited_files(
    checkout: Path, methods: Sequence[SoloMethod], command: Optional[List[str]] = None
) -> Dict[str, str]:
    """Path -> new content of every solo-learn file the contribution changes (inserted code
    formatted by ``command``, black, so that the edits are idempotent)."""
    meta = [
        {
            "name": m.name,
            "module": m.module,
            "cls": m.cls,
            "loss_functions": m.loss_functions,
            "readme_line": m.readme_line,
        }
        for m in methods
    ]
    paths = [
        "main_pretrain.py",
        "README.md",
        "docs/source/index.rst",
        "solo/args/pretrain.py",
        "solo/data/dali_dataloader.py",
        "solo/data/pretrain_dataloader.py",
        "solo/losses/__init__.py",
        "solo/methods/__init__.py",
        "solo/methods/base.py",
        "solo/methods/mae.py",
        "solo/methods/wmse.py",
    ]
    files = {}
    for p in paths:
        path = checkout / p
        if not path.is_file():
            raise ExportError(f"{checkout} has no {p}: is it a solo-learn checkout?")
        files[p] = path.read_text(encoding="utf-8")
    all_edits = [edits.BASE_METHOD, *edits.MULTI_CROP_METHODS]
    all_edits += edits.registration_edits(meta)
    all_edits += edits.MAIN_PRETRAIN
    all_edits += edits.args_edits(format_snippet(configs.long_tail_settings(), 8, command))
    pair_dataset = templates.PAIR_DATASET
    if command is not None:
        pair_dataset = (
            "\n\n" + format_python(pair_dataset.lstrip("\n"), command).rstrip("\n") + "\n"
        )
    all_edits += edits.pretrain_dataloader_edits(
        files["solo/data/pretrain_dataloader.py"], pair_dataset
    )
    all_edits += edits.DALI
    all_edits += edits.docs_edits(meta)
    all_edits += edits.readme_edits(meta)
    return edits.apply_edits(files, all_edits)


# --------------------------------------------------------------------------- diff
def _is_git(checkout: Path) -> bool:
    if shutil.which("git") is None:
        return False
    result = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and result.stdout.strip() == "true"


def git_diff_stat(checkout: Path, paths: Sequence[str]) -> Optional[str]:
    """``git diff --stat`` of ``paths`` (new files included) against HEAD, through a temporary
    index so the checkout's own index is not touched; None outside a git work tree."""
    if not _is_git(checkout):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GIT_INDEX_FILE=str(Path(tmp) / "index"))
        git = ["git", "-C", str(checkout)]
        subprocess.run([*git, "read-tree", "HEAD"], env=env, check=True, capture_output=True)
        subprocess.run([*git, "add", "--", *paths], env=env, check=True, capture_output=True)
        result = subprocess.run(
            [*git, "diff", "--cached", "--stat=100", "HEAD", "--", *paths],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    return result.stdout.rstrip()


def own_diff_stat(before: Dict[str, str], after: Dict[str, str]) -> str:
    """A ``git diff --stat``-like summary computed here (a checkout without git)."""
    rows = []
    total_add = total_del = 0
    for path in sorted(after):
        old = before.get(path, "").splitlines()
        new = after[path].splitlines()
        add = dele = 0
        for line in difflib.unified_diff(old, new, lineterm="", n=0):
            if line.startswith("+") and not line.startswith("+++"):
                add += 1
            elif line.startswith("-") and not line.startswith("---"):
                dele += 1
        if add or dele:
            rows.append((path, add, dele))
            total_add += add
            total_del += dele
    width = max((len(p) for p, _, _ in rows), default=0)
    lines = [
        f" {p.ljust(width)} | {a + d:4d} {'+' * min(a, 40)}{'-' * min(d, 40)}" for p, a, d in rows
    ]
    lines.append(f" {len(rows)} files changed, {total_add} insertions(+), {total_del} deletions(-)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- pull request
DEFAULT_TESTED = """`tests/test_upstream.py` of solo-multiview writes this contribution into a fresh
9187ea3 checkout and checks: black (line length 100) on every written file; the exported losses
against the plugin's (equal values, gradients and statistics for both MTTV forms, with and without
the band filter, K = 2 and 4); the new solo-learn tests; `main_pretrain.py` on the new configs (mttv
with 1 and 4 partner images, long-tailed, and mv_simclr at K = 4) for a few CPU steps on an image
folder; and, with `SOLO_LEARN_SUITE=1`, solo-learn's whole suite before and after (every test that
passed before passes after)."""


PROJECT_README = Path(__file__).resolve().parents[2] / "README.md"


def project_results(readme: Path = PROJECT_README) -> str:
    """The project's measured results (its README's "## Results" section), for the PR text."""
    if not readme.is_file():
        return "No benchmark numbers are claimed in this PR."
    text = readme.read_text(encoding="utf-8")
    start = text.find("\n## Results\n")
    if start < 0:
        return "No benchmark numbers are claimed in this PR."
    body = text[start + len("\n## Results\n") :]
    end = body.find("\n## ")
    body = body[:end if end >= 0 else None].strip()
    # relative links of the project's README are not files of solo-learn
    body = re.sub(r"\[([^\]]+)\]\((?!https?:)[^)]+\)", r"\1", body)
    return (
        "Measured with solo-multiview (the plugin this code comes from; `mv_simclr` and `mttv` "
        "there are the code of this PR):\n\n" + body
    )


def pr_description(
    methods: Sequence[SoloMethod], diff_stat: str, tested: Optional[str] = None
) -> str:
    names = ", ".join(f"`{m.name}`" for m in methods)
    method_lines = "\n".join(
        f"- `{m.name}` (`solo/methods/{m.module}.py`, class `{m.cls}`; loss "
        f"`solo.losses.{m.module}.{m.loss_functions[0]}`; configs "
        f"`scripts/pretrain/cifar/{m.name}.yaml`, `{m.name}_lt.yaml`)"
        for m in methods
    )
    left_out = "\n".join(f"- `{k}`: {v}" for k, v in sorted(LEFT_OUT.items()))
    results = project_results()
    tested = (tested or DEFAULT_TESTED).strip()
    return f"""# K-view methods and long-tailed CIFAR: MTTV / MIMV and K-view SimCLR

## What

{method_lines}
- `BaseMethod.supports_multiple_large_crops` (False by default; True for `wmse`, `mae` and the new
  methods): `main_pretrain.py` reads it through `solo.methods.METHODS` instead of the hard-coded
  `assert cfg.method in ["wmse", "mae"]` for `data.num_large_crops != 2`, so a method declares
  that it takes K large crops and runs at K > 2 from `main_pretrain.py`.
- `BaseMethod.uses_partner_pairs` and `solo.data.pretrain_dataloader.PartnerPairDataset`: MTTV
  pairs every image with K partner images drawn from the training set; each pair gives a
  normalised and an augmented view of both images (`build_normalization_pipeline`), in the order
  `[x_n^1..K, y_a^1..K, x_a^1..K, y_n^1..K]`. `solo/args/pretrain.py` checks that such a method
  has one augmentation entry and refuses `data.format=dali` with a message (the DALI pipeline
  does not implement the pairing).
- `data.long_tail` (`solo/data/long_tail.py`, `solo/args/pretrain.py`): a long-tailed subset of
  CIFAR-10/100 or of an image folder: exponential (CIFAR-LT, Cao et al. 2019), step or Pareto
  profile with an imbalance ratio, seeded per-class selection, natural / permuted / explicit class
  order, or an index file (the SDCLR / BCL split files). Wired into `prepare_datasets` (torchvision)
  and into the DALI pretrain pipeline (file lists). `data.long_tail: {{}}` gives CIFAR-10-LT at
  ratio 100 (12,406 images, 5000..50 per class).
- `solo/losses/multiview_utils.py`: the band filter and the distributed helpers the losses use.
- Tests: `tests/losses/test_<method>.py` (formulas checked against float64 loop references, K = 2
  reductions to `simclr_loss_func`), `tests/methods/test_<method>.py` (solo-learn's method tests:
  forward shapes, a `fast_dev_run` fit on imagenet100- and cifar-sized data, K = 1..4),
  `tests/data/test_long_tail.py`. Docs pages and README entries.

## Why

More than two views per image and long-tailed data are where recent SSL work is
(MTTV / MIMV, "Maximally Useful and Minimally Redundant: The Key to Self Supervised Learning for
Imbalanced Data", arXiv 2509.08469, reports gains on CIFAR-10-LT / CIFAR-100-LT and ImageNet-LT).
Until now `main_pretrain.py` refused `num_large_crops != 2` for every method but W-MSE and MAE,
and solo-learn had no long-tailed datasets. The code comes from
solo-multiview, a solo-learn plugin, where it is tested (single process
and two-process gloo equality of the losses, K = 2 reductions to the two-view losses); the files
here are generated from that code, so the two do not drift.

## Results

{results}

## How tested

{tested}

To run the checks:

```bash
pytest tests/losses/test_mttv.py tests/losses/test_mv_simclr.py tests/methods/test_mttv.py \\
    tests/methods/test_mv_simclr.py tests/data/test_long_tail.py
python main_pretrain.py --config-path scripts/pretrain/cifar/ --config-name mttv_lt.yaml
python main_pretrain.py --config-path scripts/pretrain/cifar/ --config-name mv_simclr.yaml \\
    method_kwargs.num_views=4
```

## Not in this PR

This PR adds {names}. The other K-view methods of solo-multiview are left out:
{left_out}

## Files

```
{diff_stat}
```
"""


# --------------------------------------------------------------------------- entry point
def write_contribution(
    checkout: Path,
    method_names: Optional[Sequence[str]] = None,
    black: Optional[str] = None,
    format_code: bool = True,
    dry_run: bool = False,
    tested: Optional[str] = None,
) -> Report:
    """Write the contribution for ``method_names`` (default: every supported method) into the
    solo-learn checkout ``checkout``; returns what was written, the diff stat and the PR text."""
    checkout = Path(checkout).resolve()
    if not (checkout / "solo" / "methods" / "base.py").is_file():
        raise ExportError(f"{checkout} is not a solo-learn checkout (no solo/methods/base.py)")
    methods = resolve(method_names)
    command = black_command(black) if format_code else None
    if format_code and command is None:
        raise ExportError(
            "black is needed to write files in solo-learn's format (its pre-commit runs black "
            "--line-length 100): pip install black==23.12.0, pass --black 'CMD', or --no-format"
        )
    contents = {**new_files(checkout, methods), **edited_files(checkout, methods, command)}
    report = Report(checkout, methods, formatted=command is not None)
    before: Dict[str, str] = {}
    after: Dict[str, str] = {}
    for path, text in sorted(contents.items()):
        if path.endswith(".py"):
            text = format_python(text, command)
        target = checkout / path
        old = target.read_text(encoding="utf-8") if target.exists() else None
        if old is not None:
            before[path] = old
        after[path] = text
        if old == text:
            report.unchanged.append(path)
            continue
        report.written.append(path)
        if not dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    stat = None if dry_run else git_diff_stat(checkout, sorted(contents))
    report.diff_stat = (
        stat
        if stat is not None
        else own_diff_stat(
            {p: t for p, t in before.items() if p in contents and _pristine(p, before)}, after
        )
    )
    report.description = pr_description(methods, report.diff_stat, tested)
    if not dry_run:
        (checkout / PR_FILE).write_text(report.description, encoding="utf-8")
    return report


def _pristine(path: str, before: Dict[str, str]) -> bool:
    # without git, "before" is the file as found (a second run compares against the first run's)
    return path in before


def supported_summary() -> str:
    lines = ["written by this command:"]
    lines += [f"  {name}" for name in sorted(SUPPORTED)]
    lines.append("left out:")
    lines += [f"  {name}: {why}" for name, why in sorted(LEFT_OUT.items())]
    return "\n".join(lines)
