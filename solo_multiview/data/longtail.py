"""Long-tailed subsets of a (usually balanced) training set: the ``data.long_tail`` overlay.

A profile gives the number of images kept per class *rank* ``r`` (rank 0 is the head, rank
``C - 1`` the tail) from ``n_max`` and the imbalance ratio ``rho = n_max / n_min``:

- ``exp``:    ``n_r = floor(n_max * rho ** (-r / (C - 1)))`` (Cao et al. 2019, CIFAR-LT; with
  rho = 100 this gives 12,406 images for CIFAR-10, 5000..50, and 10,847 for CIFAR-100, 500..5).
- ``step``:   ``n_r = n_max`` for ``r < C / 2`` and ``floor(n_max / rho)`` otherwise (for odd C the
  middle class belongs to the head).
- ``pareto``: ``n_r = floor(n_max * (1 + r) ** (-alpha))`` with ``alpha = ln(rho) / ln(C)``, a
  power law in the rank (Zipf/Pareto shape, heavier head drop than ``exp`` and a flatter tail); the
  exponent is chosen so that ``n_{C-1} = floor(n_max / rho)``, i.e. rho is still max/min.
- ``none``:   every image of the source.

A class order maps ranks to class ids: ``natural`` (class 0 is the head), ``permuted`` (a seeded
permutation) or an explicit list of class ids from head to tail. Within class ``c`` the kept images
are the first ``n`` of a shuffle seeded by ``(seed, c)``; seeding per class (not one stream over
all classes) keeps the subsets nested: a smaller ``n`` for a class keeps a prefix of a larger one.

``selection: authors`` draws the images of the ``exp`` profile as the MTTV authors' code (the LDAM
``IMBALANCECIFAR`` procedure) does instead: per-class counts ``int(N / C * rho ** (-c / (C - 1)))``
and one legacy ``RandomState(seed)`` stream shuffling the file positions of class 0, 1, ... in
turn, keeping the first ``n_c`` of each (``longtail_authors.authors_cifar_lt_indexes``; with
``seed: 0`` their exact CIFAR-10-LT / CIFAR-100-LT images). Same counts as ``per_class`` for
CIFAR at ratio 100, different images; the subsets are not nested across ratios.

Instead of a profile, ``index_file`` may name a ``.npy`` array of indexes into the full training
set (the SDCLR / BCL split files); when it is set it alone defines the subset.

``fraction`` then keeps a stratified fraction of the subset (every class in proportion):
``StratifiedShuffleSplit(n_splits=1, train_size=int(fraction * n), random_state=fraction_seed)``
of scikit-learn on its labels (``longtail_authors.stratified_fraction``, reimplemented and
checked equal), the MTTV authors' 25 % of the ImageNet-LT train list (``fraction: 0.25``,
``fraction_seed: 42``; they take ``n`` from their config, 115,846, the list's length).

Indexes are returned sorted (the data loaders shuffle).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from solo_multiview.config.schema import setting
from solo_multiview.data.longtail_authors import authors_cifar_lt_indexes, stratified_fraction

PROFILES = ("exp", "step", "pareto", "none")
CLASS_ORDERS = ("natural", "permuted")
SELECTIONS = ("per_class", "authors")


@dataclass
class LongTailConfig:
    """``data.long_tail``: the long-tail overlay (module docstring). A null profile or ratio
    takes the dataset's default (``data/datasets.py``: CIFAR exp/100, digits exp/10,
    image_list none)."""

    profile: Optional[str] = setting(None, "per-class count profile (null: the dataset's)",
                                     choices=PROFILES)
    imbalance_ratio: Optional[float] = setting(None, "n_max / n_min (null: the dataset's)",
                                               minimum=1)
    seed: int = setting(0, "seed of the per-class selection and of class_order: permuted",
                        minimum=0)
    class_order: Any = setting("natural", "natural | permuted | a list of class ids, head "
                               "first")
    index_file: Optional[str] = setting(None, ".npy indexes into the full train set (SDCLR/BCL "
                                        "split files); replaces the profile")
    split_file: Optional[str] = setting(None, "image_list: the train list ('relative/path "
                                        "label' per line)")
    n_max: Optional[int] = setting(None, "images of the head class (null: the smallest class "
                                   "size of the source)", minimum=1)
    selection: str = setting("per_class", "which images of each class: per_class (a shuffle "
                             "seeded by (seed, class), nested subsets) | authors (the MTTV "
                             "authors' one RandomState(seed) stream; profile exp, natural "
                             "order)", choices=SELECTIONS)
    fraction: Optional[float] = setting(None, "keep a stratified fraction of the subset "
                                        "(scikit-learn's StratifiedShuffleSplit; the MTTV "
                                        "authors' ImageNet-LT: 0.25; null: all)",
                                        above=0, below=1)
    fraction_seed: int = setting(42, "random_state of the stratified fraction", minimum=0)

#: Values used for keys missing from ``data.long_tail`` (the declared defaults; a profile and
#: ratio left null fall back to CIFAR-LT's exp / 100 here, the dataset's own in datasets.py).
DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in vars(LongTailConfig()).items() if k != "split_file"},
    "profile": "exp",
    "imbalance_ratio": 100.0,
}

# A relative slack before flooring, so that a product such as 5000 * 100**-1 that lands one ulp
# under an integer still floors to that integer.
_FLOOR_SLACK = 1e-9


def _floor(value: float) -> int:
    return int(math.floor(value * (1.0 + _FLOOR_SLACK)))


def _node_get(node: Any, key: str) -> Any:
    """``node[key]`` for a dict/DictConfig/None, falling back to ``DEFAULTS`` when unset."""
    value = node.get(key, None) if node is not None else None
    return DEFAULTS[key] if value is None else value


def counts_by_rank(
    profile: str, num_classes: int, n_max: int, imbalance_ratio: float
) -> np.ndarray:
    """Images per class rank (rank 0 = head) for ``profile`` in ``exp | step | pareto``.

    See the module docstring for the formulas. Returns an int64 array of length ``num_classes``.
    """
    if profile not in PROFILES or profile == "none":
        raise ValueError(
            f"data.long_tail.profile: {profile!r} has no per-rank counts; "
            f"use one of {[p for p in PROFILES if p != 'none']} (or 'none' for all images)"
        )
    if imbalance_ratio < 1:
        raise ValueError(
            f"data.long_tail.imbalance_ratio must be >= 1 (n_max / n_min), got {imbalance_ratio}"
        )
    if num_classes < 1:
        raise ValueError(f"data.num_classes must be >= 1, got {num_classes}")
    if n_max < 1:
        raise ValueError(f"data.long_tail.n_max must be >= 1, got {n_max}")
    rho = float(imbalance_ratio)
    C = num_classes
    if C == 1:
        return np.array([n_max], dtype=np.int64)
    if profile == "exp":
        counts = [_floor(n_max * rho ** (-r / (C - 1))) for r in range(C)]
    elif profile == "step":
        counts = [n_max if r < C / 2 else _floor(n_max / rho) for r in range(C)]
    else:  # pareto: rho ** (-ln(1 + r) / ln C) == (1 + r) ** (-ln rho / ln C)
        counts = [_floor(n_max * rho ** (-math.log1p(r) / math.log(C))) for r in range(C)]
    return np.asarray(counts, dtype=np.int64)


def class_order(
    order: Union[str, Sequence[int]], num_classes: int, seed: int = 0
) -> np.ndarray:
    """Class ids from head to tail: ``order[r]`` is the class at rank ``r``.

    ``"natural"`` -> ``[0, 1, ..., C-1]``; ``"permuted"`` -> a permutation drawn from
    ``np.random.default_rng(seed)``; a sequence must be a permutation of ``range(C)``.
    """
    if isinstance(order, str):
        if order == "natural":
            return np.arange(num_classes, dtype=np.int64)
        if order == "permuted":
            return np.random.default_rng(seed).permutation(num_classes).astype(np.int64)
        raise ValueError(
            f"data.long_tail.class_order: unknown value {order!r}; use one of "
            f"{list(CLASS_ORDERS)} or a list of class ids from head to tail"
        )
    ids = np.asarray(list(order))
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"data.long_tail.class_order: a list must hold integer class ids, got {list(order)}"
        )
    if len(ids) != num_classes or not np.array_equal(np.sort(ids), np.arange(num_classes)):
        raise ValueError(
            f"data.long_tail.class_order must be a permutation of range({num_classes}) "
            f"(each class id once, head first), got {ids.tolist()}"
        )
    return ids.astype(np.int64)


def select_per_class(
    targets: np.ndarray, counts_per_class: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Keep ``counts_per_class[c]`` images of each class ``c``: the first ones of a shuffle of
    that class's indexes seeded by ``(seed, c)``. Returns sorted int64 indexes into ``targets``.
    """
    targets = np.asarray(targets)
    chosen = []
    for c, n in enumerate(np.asarray(counts_per_class).tolist()):
        members = np.flatnonzero(targets == c)
        if n > len(members):
            raise ValueError(
                f"data.long_tail: class {c} needs {n} images but the training set has only "
                f"{len(members)}; lower data.long_tail.n_max or change the profile/class_order"
            )
        rng = np.random.default_rng([int(seed), c])
        chosen.append(members[rng.permutation(len(members))[:n]])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def load_index_file(path: Union[str, Path], num_samples: int) -> np.ndarray:
    """Read a ``.npy`` array of indexes into the full training set (``num_samples`` images).

    Valid: a 1-D integer array with unique values in ``[0, num_samples)``. Returned sorted.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.long_tail.index_file: no such file '{path}'")
    try:
        indexes = np.load(path, allow_pickle=False)
    except Exception as err:  # np.load raises several types for a non-.npy file
        raise ValueError(
            f"data.long_tail.index_file: '{path}' is not a readable .npy array ({err})"
        ) from err
    indexes = np.asarray(indexes)
    if indexes.ndim != 1 or not np.issubdtype(indexes.dtype, np.integer):
        raise ValueError(
            f"data.long_tail.index_file: '{path}' must hold a 1-D integer array, "
            f"got shape {indexes.shape} and dtype {indexes.dtype}"
        )
    bad = indexes[(indexes < 0) | (indexes >= num_samples)]
    if bad.size:
        raise ValueError(
            f"data.long_tail.index_file: '{path}' has {bad.size} index(es) outside "
            f"[0, {num_samples}) for a training set of {num_samples} images, "
            f"e.g. {bad[:5].tolist()}"
        )
    uniq, counts = np.unique(indexes, return_counts=True)
    if uniq.size != indexes.size:
        raise ValueError(
            f"data.long_tail.index_file: '{path}' repeats indexes, e.g. "
            f"{uniq[counts > 1][:5].tolist()}; each image may appear once"
        )
    return uniq.astype(np.int64)


def long_tail_indexes(
    targets: np.ndarray, num_classes: int, lt_cfg: Optional[Mapping[str, Any]]
) -> np.ndarray:
    """Sorted indexes of the long-tailed subset of a training set with labels ``targets``.

    ``lt_cfg`` is the ``data.long_tail`` node (keys: profile, imbalance_ratio, seed, class_order,
    index_file, n_max, selection, fraction, fraction_seed; missing keys take ``DEFAULTS``).
    ``n_max`` defaults to the smallest class size of the full set, which equals the per-class
    count of a balanced set (5000 for CIFAR-10) and guarantees that every class has enough
    images under any class order.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, data.num_classes={num_classes}), "
            f"got range [{targets.min()}, {targets.max()}]"
        )
    available = np.bincount(targets, minlength=num_classes)

    index_file = _node_get(lt_cfg, "index_file")
    profile = str(_node_get(lt_cfg, "profile"))
    if index_file is not None:
        selected = load_index_file(index_file, len(targets))
        source = f"data.long_tail.index_file '{index_file}'"
    elif str(_node_get(lt_cfg, "selection")) == "authors":
        selected, source = _authors_selection(targets, num_classes, lt_cfg, profile)
    elif profile == "none":
        selected = np.arange(len(targets), dtype=np.int64)
        source = "the full training set (data.long_tail.profile=none)"
    elif profile in PROFILES:
        ratio = float(_node_get(lt_cfg, "imbalance_ratio"))
        seed = int(_node_get(lt_cfg, "seed"))
        n_max_cfg = _node_get(lt_cfg, "n_max")
        n_max = int(available.min()) if n_max_cfg is None else int(n_max_cfg)
        per_rank = counts_by_rank(profile, num_classes, n_max, ratio)
        order = class_order(_node_get(lt_cfg, "class_order"), num_classes, seed)
        per_class = np.empty(num_classes, dtype=np.int64)
        per_class[order] = per_rank
        selected = select_per_class(targets, per_class, seed)
        source = (
            f"data.long_tail (profile={profile}, imbalance_ratio={ratio:g}, n_max={n_max})"
        )
    else:
        raise ValueError(
            f"data.long_tail.profile: unknown profile {profile!r}; allowed: {list(PROFILES)}"
        )

    fraction = _node_get(lt_cfg, "fraction")
    if fraction is not None:
        selected = _stratified(targets, selected, float(fraction),
                               int(_node_get(lt_cfg, "fraction_seed")))
        source += f" and data.long_tail.fraction={float(fraction):g}"

    kept = np.bincount(targets[selected], minlength=num_classes)
    empty = np.flatnonzero(kept == 0)
    if empty.size:
        raise ValueError(
            f"data.long_tail: {empty.size} class(es) have zero images in {source}, e.g. classes "
            f"{empty[:10].tolist()} (full-set counts {available[empty[:10]].tolist()}); raise "
            f"data.long_tail.n_max or lower data.long_tail.imbalance_ratio"
        )
    return selected


def _authors_selection(
    targets: np.ndarray, num_classes: int, lt_cfg: Optional[Mapping[str, Any]], profile: str
) -> tuple[np.ndarray, str]:
    """``selection: authors`` (module docstring), sorted; ValueError naming the key that the
    authors' procedure cannot honour."""
    if profile != "exp":
        raise ValueError(f"data.long_tail.selection=authors: the authors' procedure has the exp "
                         f"profile only, got profile={profile}; set data.long_tail.profile=exp "
                         "or selection=per_class")
    order = _node_get(lt_cfg, "class_order")
    if order != "natural":
        raise ValueError(f"data.long_tail.selection=authors: class 0 is the head in the authors' "
                         f"procedure, got class_order={order!r}; set class_order=natural or "
                         "selection=per_class")
    if _node_get(lt_cfg, "n_max") is not None:
        raise ValueError("data.long_tail.selection=authors: the head count is theirs (training "
                         "set size / classes); leave data.long_tail.n_max null or use "
                         "selection=per_class")
    ratio = float(_node_get(lt_cfg, "imbalance_ratio"))
    seed = int(_node_get(lt_cfg, "seed"))
    selected = np.sort(authors_cifar_lt_indexes(targets, num_classes, ratio, seed))
    return selected, (f"data.long_tail (selection=authors, profile=exp, imbalance_ratio="
                      f"{ratio:g}, seed={seed})")


def _stratified(targets: np.ndarray, selected: np.ndarray, fraction: float,
                seed: int) -> np.ndarray:
    """The sorted positions of a stratified ``fraction`` of ``selected`` (``fraction`` key)."""
    try:
        kept = stratified_fraction(targets[selected], fraction, seed)
    except ValueError as err:
        raise ValueError(f"data.long_tail.fraction={fraction:g}: {err}") from err
    return np.sort(selected[kept]).astype(np.int64)
