"""Results folder for one evaluation: ``results.json``, ``per_class.csv``, ``per_class.png``, plus
a one-screen terminal summary.

Every file is written atomically: to a temporary file in the same folder, flushed and fsynced,
then moved over the target with ``os.replace``, so an interrupted run leaves either the previous
good file or the new complete one, never a truncated file. JSON is strict (``NaN`` is written as
``null``). The plot uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import IO, Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from solo_multiview.atomic import atomic_write

from .groups import GROUP_NAMES, frequency_order, thirds_groups

PathLike = Union[str, os.PathLike]
RESULTS_JSON = "results.json"
PER_CLASS_CSV = "per_class.csv"
PER_CLASS_PNG = "per_class.png"


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: mappings (incl. omegaconf) -> dict, sequences/arrays/tensors -> list,
    numpy/torch scalars -> numbers, non-finite floats -> ``None``, paths -> str; anything else
    becomes its ``repr`` so that a stray setting never loses a finished evaluation."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist())
    try:  # omegaconf containers, resolved
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return to_jsonable(OmegaConf.to_container(obj, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf ships with solo-learn
        pass
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    return repr(obj)


def write_results_json(
    path: PathLike,
    report: Mapping[str, Any],
    settings: Optional[Mapping[str, Any]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> Path:
    """``report``'s keys plus ``"settings"`` (and ``"class_names"`` when given), as strict,
    indented JSON."""
    _check_names(report, class_names)
    extra: Dict[str, Any] = {"settings": settings or {}}
    if class_names is not None:
        extra["class_names"] = [str(n) for n in class_names]
    payload = to_jsonable({**report, **extra})
    return atomic_write(path, lambda f: json.dump(payload, f, indent=2, allow_nan=False))


def _check_names(report: Mapping[str, Any], class_names: Optional[Sequence[str]]) -> None:
    if class_names is not None and len(class_names) != report["num_classes"]:
        raise ValueError(f"class_names: expected {report['num_classes']} names, got "
                         f"{len(class_names)}")


def write_per_class_csv(
    path: PathLike, report: Mapping[str, Any], class_names: Optional[Sequence[str]] = None
) -> Path:
    """Columns: class_id, class_name (empty when not given), train_count, test_count, accuracy
    (percent, empty for a class without test images), group_<rule> for every rule."""
    _check_names(report, class_names)
    rules = list(report["groups"])

    def write(f: IO[str]) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["class_id", "class_name", "train_count", "test_count", "accuracy"]
                   + [f"group_{r}" for r in rules])
        for c in range(report["num_classes"]):
            acc = report["per_class_acc"][c]
            w.writerow([c, "" if class_names is None else class_names[c],
                        report["train_counts"][c], report["test_counts"][c],
                        "" if acc is None or math.isnan(acc) else repr(float(acc))]
                       + [GROUP_NAMES[report["groups"][r]["group_of_class"][c]] for r in rules])

    return atomic_write(path, write)


def plot_per_class(
    path: PathLike, report: Mapping[str, Any], class_names: Optional[Sequence[str]] = None
) -> Path:
    """Per-class accuracy bars ordered head to tail (by training count, ties by class id) and
    coloured by thirds group, training count as a line on a log-scaled right axis, dashed lines
    at the thirds boundaries; classes without test images are marked with a grey ``x``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_names(report, class_names)
    counts = np.asarray(report["train_counts"], dtype=np.int64)
    acc = np.array([np.nan if a is None else a for a in report["per_class_acc"]], dtype=float)
    order = frequency_order(counts)
    thirds = thirds_groups(counts)
    C = counts.size
    x = np.arange(C)

    fig = Figure(figsize=(min(20.0, max(6.0, 0.12 * C)), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    palette = np.array(["tab:blue", "tab:orange", "tab:red"])
    acc_sorted = acc[order]
    ax.bar(x, np.nan_to_num(acc_sorted), width=0.85 if C < 200 else 1.0,
           color=palette[thirds.group_of_class[order]])
    missing = np.isnan(acc_sorted)
    if missing.any():
        ax.scatter(x[missing], np.zeros(missing.sum()), marker="x", color="grey", zorder=3,
                   label="no test images")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_xlim(-0.5, C - 0.5)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("classes, head to tail (training frequency)")
    if C <= 40:
        labels = [str(class_names[c]) if class_names is not None else str(c) for c in order]
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=90 if class_names is not None else 0, fontsize=7)

    ax2 = ax.twinx()
    positive = counts[order] > 0
    if positive.any():
        ax2.plot(x[positive], counts[order][positive], color="black", lw=1.2, marker=".",
                 ms=3 if C <= 200 else 0)
        ax2.set_yscale("log")
    ax2.set_ylabel("training images (log)")

    bounds = np.cumsum(thirds.sizes)[:-1]
    for b in bounds:
        if 0 < b < C:
            ax.axvline(b - 0.5, color="grey", ls="--", lw=1)
    starts = np.concatenate([[0], np.cumsum(thirds.sizes)])
    group_acc = report["groups"].get("thirds", {}).get("acc", {})
    for g, name in enumerate(GROUP_NAMES):
        if thirds.sizes[g] == 0:
            continue
        val = group_acc.get(name)
        text = name.capitalize() + ("" if val is None or math.isnan(val) else f" {val:.1f}")
        ax.text((starts[g] + starts[g + 1] - 1) / 2, 101, text, ha="center", va="bottom",
                fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)


def _fmt(v: Any, width: int = 7) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-".rjust(width)
    return f"{v:{width}.2f}"


def summary_table(report: Mapping[str, Any], title: Optional[str] = None) -> str:
    """A few lines for the terminal: overall top1/top5/balanced, then Many/Medium/Few, their std
    and the group sizes (classes) for each rule; ``-`` marks a missing value."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{report['num_samples']} test images, {report['num_classes']} classes")
    lines.append(f"{'':12s}{'top1':>7s} {'top5':>7s} {'balanced':>9s}")
    lines.append(f"{'overall':12s}{_fmt(report['top1'])} {_fmt(report['top5'])} "
                 f"{_fmt(report['balanced_acc'], 9)}")
    lines.append(f"{'rule':12s}{'many':>7s} {'medium':>7s} {'few':>7s} {'std':>7s}   "
                 f"classes m/m/f")
    for rule, info in report["groups"].items():
        sizes = "/".join(str(info["sizes"][n]) for n in GROUP_NAMES)
        accs = " ".join(_fmt(info["acc"][n]) for n in GROUP_NAMES)
        note = ""
        if rule == "thresholds" and info.get("params"):
            p = info["params"]
            note = f"  (>{p['many_above']}, {p['few_below']}..{p['many_above']}, " \
                   f"<{p['few_below']})"
        lines.append(f"{rule:12s}{accs} {_fmt(info['std'])}   {sizes}{note}")
    return "\n".join(lines)


def write_results(
    out_dir: PathLike,
    report: Mapping[str, Any],
    settings: Optional[Mapping[str, Any]] = None,
    class_names: Optional[Sequence[str]] = None,
    plot: bool = True,
) -> Dict[str, Path]:
    """Creates ``out_dir`` and writes results.json, per_class.csv and (``plot``) per_class.png.

    Returns the written paths keyed by ``"json"``, ``"csv"``, ``"png"``."""
    _check_names(report, class_names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": write_results_json(out / RESULTS_JSON, report, settings, class_names),
        "csv": write_per_class_csv(out / PER_CLASS_CSV, report, class_names),
    }
    if plot:
        paths["png"] = plot_per_class(out / PER_CLASS_PNG, report, class_names)
    return paths
