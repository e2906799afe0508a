"""tools/mutation_recheck.py: which survivors it picks, what it records, and its forked runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import mutation_recheck  # noqa: E402


def write_meta(root: Path, module: str, codes: dict) -> Path:
    path = root / f"{module}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": {"f": "h"}}))
    return path


def test_picks_survivors_and_uncovered_by_prefix_without_equivalents(tmp_path):
    a = write_meta(tmp_path, "solo_multiview/data/a.py",
                   {"a.x__1": 1, "a.x__2": 0, "a.x__3": 33, "a.x__4": 0, "a.y__1": 0,
                    "a.x__5": None})
    write_meta(tmp_path, "solo_multiview/eval/b.py", {"b.x__1": 0})
    found = mutation_recheck.survivors_matching(tmp_path, ["a.x"], {"a.x__4": "reason"})
    assert found == {"a.x__2": a, "a.x__3": a}
    assert set(mutation_recheck.survivors_matching(tmp_path, [], {})) == {
        "a.x__2", "a.x__3", "a.x__4", "a.y__1", "b.x__1"}


def test_records_exit_code_one_for_the_killed_and_keeps_the_rest(tmp_path):
    meta = write_meta(tmp_path, "solo_multiview/data/a.py", {"a.x__1": 0, "a.x__2": 33,
                                                             "a.x__3": 0})
    mutation_recheck.record_killed({"a.x__1": meta, "a.x__2": meta})
    data = json.loads(meta.read_text())
    assert data["exit_code_by_key"] == {"a.x__1": 1, "a.x__2": 1, "a.x__3": 0}
    assert data["hash_by_function_name"] == {"f": "h"}


def test_verdicts_of_pytest_exit_codes():
    assert [mutation_recheck.is_killed(c) for c in (0, 1, 2, 3, 4, 5, -24, -9)] == [
        False, True, True, False, False, False, True, True]


def test_each_child_sees_its_own_mutant(tmp_path, monkeypatch):
    (tmp_path / "test_switch.py").write_text(
        "import os\n\ndef test_switch():\n"
        "    assert os.environ['MUTANT_UNDER_TEST'] not in ('m.bad__1', 'm.bad__2')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUTANT_UNDER_TEST", "")
    results = mutation_recheck.run_all(["", "m.bad__1", "m.good__1", "m.bad__2"],
                                       ["test_switch.py"], jobs=2, cpu_limit_s=60)
    assert results == {"": 0, "m.bad__1": 1, "m.good__1": 0, "m.bad__2": 1}
    assert os.environ["MUTANT_UNDER_TEST"] == ""  # the parent's environment is untouched


def test_the_command_records_kills_in_the_result_files(tmp_path):
    """End to end, from a relative ``--root`` (the results are written after the chdir)."""
    import subprocess

    tool = Path(__file__).resolve().parents[1] / "tools" / "mutation_recheck.py"
    (tmp_path / "tests").mkdir()
    (tmp_path / "mutants" / "tests").mkdir(parents=True)
    (tmp_path / "tests" / "test_switch.py").write_text(
        "import os\n\ndef test_switch():\n"
        "    assert os.environ['MUTANT_UNDER_TEST'] != 'm.bad__1'\n")
    meta = write_meta(tmp_path / "mutants", "solo_multiview/m.py",
                      {"m.bad__1": 0, "m.good__1": 0, "m.done__1": 1})
    proc = subprocess.run([sys.executable, str(tool), "tests/test_switch.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 of 2 matching survivors killed and recorded" in proc.stdout
    assert json.loads(meta.read_text())["exit_code_by_key"] == {
        "m.bad__1": 1, "m.good__1": 0, "m.done__1": 1}
