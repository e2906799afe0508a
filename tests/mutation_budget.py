"""pytest plugin for the mutation run (docs/testing.md; loaded by ``[tool.mutmut]`` in
pyproject.toml, inert otherwise): each mutant runs only the fastest of the tests that cover its
function, up to ``MUTATION_BUDGET_S`` seconds of their recorded durations (default 1, the first
pass of docs/testing.md; at least one test). mutmut gives a mutant every test that executes the
function, and for the functions the whole pipeline goes through (config parsing, the backbone,
the training step) that is hundreds of Lightning runs: a survivor there would cost minutes. The
durations are the ones mutmut recorded in ``mutants/mutmut-stats.json`` while collecting
coverage."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

# what mutmut sets while it is not testing a mutant: coverage, the clean run, its self-check
NOT_A_MUTANT = {"", "stats", "list_all_tests", "fail", "mutant_generation"}


_loaded: Dict[str, float] = {}


def _durations() -> Dict[str, float]:
    # read once per process: the clean run (after the stats are written) reads it in mutmut's
    # main process, and the children forked from there, one per mutant, inherit it instead of
    # each parsing the whole stats file again
    if not _loaded:
        stats = Path.cwd() / "mutmut-stats.json"
        if stats.is_file():
            _loaded.update(json.loads(stats.read_text()).get("duration_by_test", {}))
    return _loaded


def budgeted(items: List, durations: Dict[str, float], budget_s: float) -> List:
    """The fastest items whose recorded durations sum to at most ``budget_s`` (at least one)."""
    ranked = sorted(items, key=lambda item: durations.get(item.nodeid, float("inf")))
    kept, spent = [], 0.0
    for item in ranked:
        cost = durations.get(item.nodeid, float("inf"))
        if kept and spent + cost > budget_s:
            break
        kept.append(item)
        spent += cost
    return kept


def pytest_collection_modifyitems(session, config, items) -> None:
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if mutant == "":
        _durations()  # the clean run: warm the cache the mutants' children inherit
    if mutant in NOT_A_MUTANT or "__mutmut_" not in mutant:
        return
    kept = budgeted(items, _durations(), float(os.environ.get("MUTATION_BUDGET_S", "1")))
    dropped = [item for item in items if item not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
