"""What the three entry points (main_pretrain.py, main_linear.py, main_knn.py) share: the error
exit of their preparation, and two rewrites of the command line before Hydra parses it
(``--keys``, and quoting of path-valued overrides)."""

from __future__ import annotations

import re
import sys
from typing import Any, Callable, Iterable, List, Optional, Sequence, TypeVar

T = TypeVar("T")

#: ``key=value``, optionally ``+key``, ``++key`` or ``~key``; the value may be empty.
_OVERRIDE = re.compile(r"^(\+\+|\+|~)?([A-Za-z_][\w.\-]*)=(.*)$", re.DOTALL)
#: Values Hydra reads as something other than a string, kept unquoted (null stays null).
_KEEP = ("", "null")


def prepare_or_exit(prepare: Callable[..., T], *args: Any) -> T:
    """``prepare(*args)``; bad input (ValueError, FileNotFoundError) prints one ``error:`` line
    and exits with code 2, before anything is trained, computed or written. Errors after the
    preparation are not caught: they keep their traceback."""
    try:
        return prepare(*args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def hydra_quote(value: str) -> str:
    """``value`` as a single-quoted string of Hydra's override grammar, which reads back as
    ``value`` exactly. Inside quotes Hydra keeps backslashes literally except before a quote,
    where ``\\'`` is a quote and ``\\\\`` a backslash; so a run of backslashes before a quote
    (or before the closing quote) is doubled, and each quote escaped."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def _quoted(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""


def quote_path_overrides(argv: Sequence[str], path_keys: Iterable[str]) -> List[str]:
    """``argv`` with every ``key=value`` whose key is one of ``path_keys`` rewritten to
    ``key='value'`` (see :func:`hydra_quote`), so that a path pasted as printed, e.g.
    ``pretrained_feature_extractor=trained_models/mv_simclr/v/run-ep=14.ckpt``, reaches the
    config unchanged instead of failing in Hydra's grammar (``mismatched input '='``); so do
    spaces, commas, brackets and quotes in paths. Values already quoted, empty or ``null`` are
    left alone; a path key therefore cannot be swept (``-m key=a,b``), which no entry point
    needs. Other arguments are returned as they are."""
    keys = set(path_keys)
    out = []
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if match and match.group(2) in keys:
            prefix, key, value = match.groups()
            if value not in _KEEP and not _quoted(value):
                arg = f"{prefix or ''}{key}={hydra_quote(value)}"
        out.append(arg)
    return out


def print_keys_and_exit(argv: List[str], schema: type) -> None:
    """When ``argv`` holds ``--keys``: print every key of ``schema`` (type, default, allowed
    values, help) and exit 0. Runs before Hydra, so no config value (not even a required one)
    is needed."""
    from solo_multiview.config.keys import keys_flag, text_table
    from solo_multiview.config.schema import describe

    if keys_flag(argv):
        print(text_table(describe(schema)))
        sys.exit(0)


def prepare_argv(schema: type, path_keys: Iterable[str],
                 argv: Optional[List[str]] = None) -> None:
    """The command-line steps every Hydra entry point takes before ``@hydra.main`` runs, on
    ``sys.argv`` in place (or ``argv``): ``--keys`` (:func:`print_keys_and_exit`), then the
    quoting of ``path_keys`` (:func:`quote_path_overrides`)."""
    argv = sys.argv if argv is None else argv
    print_keys_and_exit(argv, schema)
    argv[1:] = quote_path_overrides(argv[1:], path_keys)
