"""tools/mutation_report.py: scores from mutmut's result files, and clearing survivors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import mutation_report  # noqa: E402


def write_meta(root: Path, module: str, codes: dict) -> Path:
    path = root / f"{module}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": {}}))
    return path


def test_score_counts_killed_over_run_and_leaves_equivalents_and_unrun_out(tmp_path):
    # 3 killed (1, a timeout's -24, 2), 1 survived, 1 uncovered, 1 equivalent, 1 not run
    write_meta(tmp_path, "solo_multiview/losses/a.py",
               {"a.x__1": 1, "a.x__2": -24, "a.x__3": 2, "a.x__4": 0, "a.x__5": 33,
                "a.x__6": 0, "a.x__7": None})
    results = mutation_report.read_results(tmp_path, {"a.x__6": "reason"})
    table = mutation_report.table(results)
    assert "| solo_multiview/losses | 3 | 1 | 1 | 1 | 1 | 7 | 60.0% |" in table
    assert mutation_report.survivors(results) == ["a.x__4", "a.x__5"]


def test_retest_clears_survivors_of_one_folder_only(tmp_path):
    losses = write_meta(tmp_path, "solo_multiview/losses/a.py",
                        {"a.x__1": 1, "a.x__2": 0, "a.x__3": 33, "a.x__4": 0})
    hosts = write_meta(tmp_path, "solo_multiview/hosts/b.py", {"b.y__1": 0})
    cleared = mutation_report.retest(tmp_path, "solo_multiview/losses", {"a.x__4": "reason"})
    assert cleared == 2
    codes = json.loads(losses.read_text())["exit_code_by_key"]
    assert codes == {"a.x__1": 1, "a.x__2": None, "a.x__3": None, "a.x__4": 0}
    assert json.loads(losses.read_text())["hash_by_function_name"] == {}  # the rest kept
    assert json.loads(hosts.read_text())["exit_code_by_key"] == {"b.y__1": 0}


def test_carry_over_marks_unlisted_unrun_mutants_killed_and_keeps_results(tmp_path):
    meta = write_meta(tmp_path, "solo_multiview/data/a.py",
                      {"a.x__1": None, "a.x__2": None, "a.x__3": None, "a.x__4": 0,
                       "a.x__5": None})
    # a.x__2 listed as a survivor, a.x__3 a reviewed equivalent: both stay to be run;
    # a.x__4 already has a result (kept, though unlisted)
    assert mutation_report.carry_over(tmp_path, ["a.x__2"], {"a.x__3": "reason"}) == 2
    assert json.loads(meta.read_text())["exit_code_by_key"] == {
        "a.x__1": 1, "a.x__2": None, "a.x__3": None, "a.x__4": 0, "a.x__5": 1}


def test_survivor_list_carries_over_only_onto_the_tree_it_was_measured_on(tmp_path):
    path = tmp_path / "survivors.txt"
    mutation_report.write_survivors(path, ["a.x__2", "b.y__7"], "abc123")
    assert path.read_text() == "# solo_multiview tree abc123\na.x__2\nb.y__7\n"
    assert mutation_report.read_survivor_list(path, "abc123") == ["a.x__2", "b.y__7"]
    with pytest.raises(SystemExit) as other:
        mutation_report.read_survivor_list(path, "def456")
    assert str(other.value) == (
        f"error: --carry-over {path}: measured on solo_multiview tree abc123, checked out now: "
        "def456; only the listed tree's verdicts carry over (run every mutant instead)")
    with pytest.raises(SystemExit) as dirty:
        mutation_report.read_survivor_list(path, "")
    assert "checked out now: with uncommitted changes;" in str(dirty.value)
    mutation_report.write_survivors(path, ["a.x__2"], "")  # written from uncommitted code
    with pytest.raises(SystemExit, match="tree with uncommitted changes, checked out now: abc"):
        mutation_report.read_survivor_list(path, "abc123")
    (tmp_path / "bare.txt").write_text("a.x__2\n")
    with pytest.raises(SystemExit, match=r"tree \(no tree line\), checked out now: abc123"):
        mutation_report.read_survivor_list(tmp_path / "bare.txt", "abc123")
