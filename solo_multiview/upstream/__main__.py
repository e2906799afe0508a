"""``python -m solo_multiview.upstream /path/to/solo-learn [--methods ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .methods import SUPPORTED
from .source import ExportError
from .writer import PR_FILE, supported_summary, write_contribution


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m solo_multiview.upstream",
        description="Write a solo-learn pull request (methods, losses, data options, configs, "
        "tests, docs) generated from this project's code into a solo-learn checkout.",
    )
    parser.add_argument("checkout", type=Path, nargs="?", help="a solo-learn checkout (9187ea3)")
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help=f"methods to write (default: all supported: {', '.join(sorted(SUPPORTED))})",
    )
    parser.add_argument(
        "--black",
        metavar="CMD",
        help="command that runs black (default: this interpreter's black, else black on PATH)",
    )
    parser.add_argument(
        "--no-format", action="store_true", help="write the files without running black"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would change, write nothing"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the supported and the left-out methods"
    )
    parser.add_argument(
        "--tested",
        type=Path,
        metavar="FILE",
        help="markdown put under 'How tested' in PULL_REQUEST.md (e.g. test results)",
    )
    args = parser.parse_args(argv)
    if args.list:
        print(supported_summary())
        return 0
    if args.checkout is None:
        parser.error("the solo-learn checkout is required")
    try:
        report = write_contribution(
            args.checkout,
            args.methods,
            black=args.black,
            format_code=not args.no_format,
            dry_run=args.dry_run,
            tested=args.tested.read_text() if args.tested else None,
        )
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    verb = "would write" if args.dry_run else "wrote"
    print(
        f"{verb} {len(report.written)} file(s) into {report.checkout} "
        f"({len(report.unchanged)} already up to date); methods: "
        f"{', '.join(m.name for m in report.methods)}"
    )
    if not report.formatted:
        print("warning: files were not formatted with black (--no-format)")
    if not args.dry_run:
        print(f"pull-request description: {report.checkout / PR_FILE}")
    print()
    print(report.description)
    return 0


if __name__ == "__main__":
    sys.exit(main())
