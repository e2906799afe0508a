"""Run chosen test files against the recorded survivors of a mutation run (docs/testing.md) and
record the ones they kill, without a new ``mutmut run``.

    python tools/mutation_recheck.py tests/test_longtail_checks.py \
        --only solo_multiview.data.longtail. solo_multiview.data.datasets.x_few_shot

Why: after new tests, ``mutmut run`` first collects coverage and timings over the whole suite
again (minutes), and only then re-tests what ``tools/mutation_report.py --retest`` cleared. This
runs only the named test files, through mutmut's own switch (``MUTANT_UNDER_TEST`` read by the
trampolines in ``mutants/``), in children forked from one process that has imported the tests
once, as mutmut does. A mutant counts as killed when the files fail with it on (or the child
runs past its CPU-time limit, as mutmut counts a timeout) and pass without it; the code 1 is
written into mutmut's result file, so ``mutation_report.py`` and ``mutmut results`` see it.
Survivors that the files do not kill keep their result.

Not while a ``mutmut run`` is going: it rewrites the result files and runs the copied tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
from pathlib import Path
from typing import Dict, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutation_report import edit_results, open_survivor, read_equivalents  # noqa: E402

PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-W", "ignore",
               "--rootdir=."]


def survivors_matching(root: Path, prefixes: Sequence[str],
                       equivalents: Dict[str, str]) -> Dict[str, Path]:
    """{mutant name: its result file} of the surviving or uncovered mutants whose names start
    with one of ``prefixes`` (all when empty), reviewed equivalents left out."""
    found = {}
    for meta in sorted(root.rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if open_survivor(name, code, equivalents) and (
                    not prefixes or name.startswith(tuple(prefixes))):
                found[name] = meta
    return found


def record_killed(killed: Dict[str, Path]) -> None:
    """Writes exit code 1 for each killed mutant into its result file."""
    edit_results(sorted(set(killed.values())),
                 lambda name, code: 1 if name in killed else code)


def _run_in_child(mutant: str, test_files: Sequence[str], cpu_limit_s: int) -> int:
    """Forks; the child runs the test files with ``mutant`` on; returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    import pytest

    os.environ["MUTANT_UNDER_TEST"] = mutant
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit_s, cpu_limit_s + 1))
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the child exits below
    os._exit(int(pytest.main([*PYTEST_ARGS, *test_files])))


def run_all(mutants: Sequence[str], test_files: Sequence[str], jobs: int,
            cpu_limit_s: int) -> Dict[str, int]:
    """{mutant: the child's exit status} (negative: killed by that signal); ``""`` is the
    unmutated code."""
    results: Dict[str, int] = {}
    running: Dict[int, str] = {}
    queue = list(mutants)
    while queue or running:
        while queue and len(running) < jobs:
            name = queue.pop(0)
            running[_run_in_child(name, test_files, cpu_limit_s)] = name
        pid, code = os.wait()
        name = running.pop(pid)
        results[name] = -os.WTERMSIG(code) if os.WIFSIGNALED(code) else os.WEXITSTATUS(code)
    return results


def is_killed(code: int) -> bool:
    """pytest's 1 (a test failed) or 2 (interrupted: collection broke), or a signal (the CPU
    limit: a timeout); 3-5 are pytest's own errors or no tests, not a verdict on the mutant."""
    return code in (1, 2) or code < 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests", nargs="+", help="test files, relative to the repository root")
    parser.add_argument("--only", nargs="*", default=[],
                        help="mutant name prefixes (default: every survivor)")
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--pytest-arg", action="append", default=[],
                        help="one more pytest argument (repeatable), e.g. --pytest-arg=-k=name")
    parser.add_argument("--cpu-limit", type=int, default=120,
                        help="CPU seconds a child may use before it counts as a timeout")
    args = parser.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"error: --root {args.root}: no mutmut results there (run `mutmut run` "
                         "first, docs/testing.md)")
    missing = [t for t in args.tests if not Path(t).is_file()]
    if missing:
        raise SystemExit(f"error: no such test file: {', '.join(missing)}")
    args.root = args.root.resolve()  # the result files are written after the chdir below
    candidates = survivors_matching(args.root, args.only, read_equivalents())
    if not candidates:
        print("no surviving mutants match")
        return
    PYTEST_ARGS.extend(args.pytest_arg)
    for test in args.tests:  # the copy under mutants/ is what the children import
        shutil.copy(test, args.root / test)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # forked children hang in torch's pool else
    os.chdir(args.root)
    sys.path.insert(0, os.getcwd())
    os.environ["MUTANT_UNDER_TEST"] = ""
    import pytest

    pytest.main(["--collect-only", "-qq", *PYTEST_ARGS, *args.tests])  # import once, then fork
    clean = run_all([""], args.tests, 1, args.cpu_limit)[""]
    if clean != 0:
        raise SystemExit(f"error: {' '.join(args.tests)} fail (exit {clean}) on the unmutated "
                         "code; fix them first")
    results = run_all(sorted(candidates), args.tests, args.jobs, args.cpu_limit)
    killed = {name: candidates[name] for name, code in results.items() if is_killed(code)}
    record_killed(killed)
    for name, code in sorted(results.items()):
        if code != 0 and not is_killed(code):
            print(f"error {name}: pytest exit {code} (usage error or no tests collected)")
    for name in sorted(set(candidates) - set(killed)):
        print(f"survived {name}")
    print(f"{len(killed)} of {len(candidates)} matching survivors killed and recorded")


if __name__ == "__main__":
    main()
