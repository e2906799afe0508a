"""Listing the declared keys of an entry point: ``--keys`` and the README's key tables.

``python main_pretrain.py --config-name X --keys`` (likewise main_linear.py / main_knn.py) prints
every key the config accepts, with type, default, allowed values and help;
``python -m solo_multiview.config.keys`` prints the README's markdown tables, which a test
compares with the README.
"""

from __future__ import annotations

import sys
from typing import Iterable, List, Sequence

from solo_multiview.config.schema import KeyInfo, describe


def _cell(value: object) -> str:
    text = "null" if value is None else str(value)
    if isinstance(value, bool):
        text = str(value).lower()
    return text.replace("|", "\\|")


def text_table(rows: Iterable[KeyInfo]) -> str:
    """Aligned plain-text listing (one key per line)."""
    rows = list(rows)
    width = max((len(r.key) for r in rows), default=3)
    lines = []
    for r in rows:
        allowed = f" [{r.allowed}]" if r.allowed else ""
        unused = " (accepted for solo-learn configs; unused here)" if r.unused else ""
        lines.append(f"{r.key:<{width}}  {r.type} = {_cell(r.default)}{allowed}  "
                     f"{r.help}{unused}")
    return "\n".join(lines)


def markdown_table(rows: Iterable[KeyInfo]) -> str:
    """A markdown table: key, type, default, allowed, help."""
    lines = ["| key | type | default | allowed | help |", "|---|---|---|---|---|"]
    for r in rows:
        unused = " (solo-learn key; unused here)" if r.unused else ""
        lines.append(f"| `{r.key}` | {_cell(r.type)} | {_cell(r.default)} | "
                     f"{_cell(r.allowed)} | {_cell(r.help)}{unused} |")
    return "\n".join(lines)


def keys_flag(argv: List[str]) -> bool:
    """Removes ``--keys`` from ``argv`` (before Hydra parses it); True when it was there."""
    if "--keys" in argv:
        argv.remove("--keys")
        return True
    return False


def readme_tables() -> str:
    """The README's key tables: every entry point's schema and each method's own keys."""
    from solo_multiview.eval.eval_config import schema_for
    from solo_multiview.methods import METHODS
    from solo_multiview.training.keys import common_pretrain_schema

    common = [row for row in describe(common_pretrain_schema()) if row.key != "method_kwargs"]
    parts: List[str] = ["**main_pretrain.py (every method)**", "", markdown_table(common), ""]
    for name in sorted(METHODS):
        method = METHODS[name]
        rows = list(describe(method.Kwargs, "method_kwargs."))
        if method.Momentum is not None:
            rows += list(describe(method.Momentum, "momentum."))
        parts += [f"**`{name}`: method_kwargs (and momentum)**", "", markdown_table(rows), ""]
    for kind in ("linear", "knn"):
        parts += [f"**main_{kind}.py**", "", markdown_table(describe(schema_for(kind))), ""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: Sequence[str] = ()) -> None:
    sys.stdout.write(readme_tables())


if __name__ == "__main__":
    main(sys.argv[1:])
