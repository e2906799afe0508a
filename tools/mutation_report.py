"""Scores of a mutation run (docs/testing.md) from mutmut's result files, per folder and module.

    python tools/mutation_report.py                       # the table, from mutants/
    python tools/mutation_report.py --survivors out.txt   # also every surviving mutant's name
    python tools/mutation_report.py --show                # each survivor's diff (mutmut show)
    python tools/mutation_report.py --retest solo_multiview/losses   # survivors run again
    python tools/mutation_report.py --carry-over benchmarks/results/mutation_survivors.txt

mutmut writes ``mutants/<module>.py.meta`` (JSON) with an exit code per mutant: 1 or another
positive code: killed (a test failed); 0: survived; 33: no test covers the function; a negative
code: the child was killed by a signal (the CPU-time limit: a timeout, counted as killed, as
mutmut does); None: not run yet. Score = killed / (killed + survived + no tests), the share of
run mutants that some test catches. ``tools/mutation_equivalents.txt`` lists the survivors
reviewed as equivalent (no test can tell them from the original: the reason is on each line);
they count in the "equivalent" column and leave the score's denominator.

``--carry-over`` is for a machine without the earlier ``mutants/`` (it is not in git): after
``mutmut run`` has generated the mutants, it marks every mutant that the named survivor lists do
not name as killed, so that the next ``mutmut run`` tests only the listed ones (and the reviewed
equivalents, to see them survive again). It refuses unless each list's first line names the
``solo_multiview`` tree that is checked out now, unchanged: a killed verdict holds only for the
code it was measured on, and tests are only ever added.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

STATUS = {None: "not run", 0: "survived", 33: "no tests"}
TREE_HEADER = "# solo_multiview tree "
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.txt")


def read_equivalents(path: Path = EQUIVALENTS) -> Dict[str, str]:
    """{mutant name: reason} from ``name  # reason`` lines."""
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        name, _, reason = line.partition("#")
        if name.strip():
            found[name.strip()] = reason.strip()
    return found


def status(code) -> str:
    if code in STATUS:
        return STATUS[code]
    return "killed" if code != 0 else "survived"


def open_survivor(name: str, code, equivalents: Dict[str, str]) -> bool:
    """A surviving or uncovered mutant that is not a reviewed equivalent: one a new test may
    still kill."""
    return status(code) in ("survived", "no tests") and name not in equivalents


def read_results(root: Path, equivalents: Dict[str, str]) -> Dict[str, Dict[str, str]]:
    """{module path: {mutant name: status}} for every result file under ``root``."""
    results: Dict[str, Dict[str, str]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        module = meta.relative_to(root).as_posix()[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        results[module] = {
            name: "equivalent" if name in equivalents and status(code) in ("survived", "no tests")
            else status(code) for name, code in codes.items()}
    return results


def score_row(counts: Counter) -> Tuple[int, int, int, int, int, int, str]:
    run = counts["killed"] + counts["survived"] + counts["no tests"]
    score = f"{100 * counts['killed'] / run:.1f}%" if run else "-"
    return (counts["killed"], counts["survived"], counts["no tests"], counts["equivalent"],
            counts["not run"], sum(counts.values()), score)


def table(results: Dict[str, Dict[str, str]]) -> str:
    folders: Dict[str, Counter] = defaultdict(Counter)
    for module, mutants in results.items():
        parts = module.split("/")
        folder = "/".join(parts[:2]) if len(parts) > 2 else module
        folders[folder].update(mutants.values())
    lines = ["| folder | killed | survived | no tests | equivalent | not run | mutants | score |",
             "|---|---|---|---|---|---|---|---|"]
    total: Counter = Counter()
    for folder in sorted(folders):
        total.update(folders[folder])
        lines.append(f"| {folder} | " + " | ".join(map(str, score_row(folders[folder]))) + " |")
    lines.append("| **all** | " + " | ".join(map(str, score_row(total))) + " |")
    return "\n".join(lines)


def survivors(results: Dict[str, Dict[str, str]]) -> List[str]:
    return sorted(name for mutants in results.values() for name, s in mutants.items()
                  if s in ("survived", "no tests"))


def source_tree() -> str:
    """The git tree id of ``solo_multiview/`` at HEAD, or "" when it has uncommitted changes (or
    no git): what a survivor list's verdicts were measured on."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True)
    tree = git("rev-parse", "HEAD:solo_multiview")
    dirty = git("status", "--porcelain", "--", "solo_multiview")
    if tree.returncode or dirty.returncode or dirty.stdout.strip():
        return ""
    return tree.stdout.strip()


def write_survivors(path: Path, names: List[str], tree: str) -> None:
    path.write_text(f"{TREE_HEADER}{tree or 'with uncommitted changes'}\n"
                    + "".join(f"{name}\n" for name in names))


def read_survivor_list(path: Path, tree: str) -> List[str]:
    """The names in a list written by ``--survivors``; refuses a list measured on other code."""
    lines = path.read_text().splitlines()
    listed = lines[0][len(TREE_HEADER):] if lines and lines[0].startswith(TREE_HEADER) else None
    if not tree or listed != tree:
        now = tree or "with uncommitted changes"
        raise SystemExit(f"error: --carry-over {path}: measured on solo_multiview tree "
                         f"{listed or '(no tree line)'}, checked out now: {now}; only the "
                         "listed tree's verdicts carry over (run every mutant instead)")
    return [line.strip() for line in lines[1:] if line.strip() and not line.startswith("#")]


def edit_results(metas: Iterable[Path],
                 edit: Callable[[str, Optional[int]], Optional[int]]) -> int:
    """Sets each mutant's exit code to ``edit(name, code)`` in mutmut's result files (a file is
    written only when one of its codes changes). Returns how many codes changed."""
    changed = 0
    for meta in metas:
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        edited = {name: edit(name, code) for name, code in codes.items()}
        count = sum(edited[name] != code for name, code in codes.items())
        if count:
            data["exit_code_by_key"] = edited
            meta.write_text(json.dumps(data))
            changed += count
    return changed


def carry_over(root: Path, listed: List[str], equivalents: Dict[str, str]) -> int:
    """Marks each mutant not run yet as killed (1) unless ``listed`` or a reviewed equivalent
    names it; those stay to be run (the table's "not run"). Returns how many were marked."""
    keep = set(listed) | set(equivalents)
    return edit_results(sorted(root.rglob("*.py.meta")),
                        lambda name, code: 1 if code is None and name not in keep else code)


def retest(root: Path, folder: str, equivalents: Dict[str, str]) -> int:
    """Clears the result of every surviving or uncovered mutant (not the reviewed equivalents)
    of the modules under ``folder``, so the next ``mutmut run`` tests them again: mutmut
    re-tests a mutant only when its function changed, not when a test was added. Returns how
    many were cleared."""
    return edit_results(sorted((root / folder).rglob("*.py.meta")),
                        lambda name, code: None if open_survivor(name, code, equivalents)
                        else code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    parser.add_argument("--survivors", type=Path, default=None,
                        help="write the surviving and uncovered mutants' names here")
    parser.add_argument("--show", action="store_true",
                        help="print each surviving mutant's diff (mutmut show)")
    parser.add_argument("--retest", metavar="FOLDER", default=None,
                        help="clear the survivors' results under FOLDER (e.g. "
                        "solo_multiview/losses) so that the next mutmut run tests them again")
    parser.add_argument("--carry-over", metavar="LIST", nargs="+", type=Path, default=None,
                        help="survivor lists of an earlier run on the same source: mark every "
                        "mutant they do not name as killed (a new machine's mutants/)")
    args = parser.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"error: --root {args.root}: no mutmut results there (run `mutmut run` "
                         "first, docs/testing.md)")
    if args.retest:
        if not (args.root / args.retest).is_dir():
            raise SystemExit(f"error: --retest {args.retest}: no such folder under {args.root}")
        print(f"{retest(args.root, args.retest, read_equivalents())} results cleared under "
              f"{args.root / args.retest}")
    if args.carry_over:
        tree = source_tree()
        listed = [name for path in args.carry_over for name in read_survivor_list(path, tree)]
        marked = carry_over(args.root, listed, read_equivalents())
        print(f"{marked} mutants marked killed from the earlier run; the rest of the table's "
              "\"not run\" is left to run")
    results = read_results(args.root, read_equivalents())
    print(table(results))
    if args.survivors:
        write_survivors(args.survivors, survivors(results), source_tree())
    if args.show:
        for name in survivors(results):
            diff = subprocess.run(["mutmut", "show", name], capture_output=True, text=True).stdout
            changed = [line for line in diff.splitlines()
                       if line[:1] in "+-" and line[:3] not in ("+++", "---")]
            print(f"== {name}\n" + "\n".join(changed))


if __name__ == "__main__":
    main()
