"""What the three entry points (main_pretrain.py, main_linear.py, main_knn.py) share."""

from __future__ import annotations

import sys
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def prepare_or_exit(prepare: Callable[..., T], *args: Any) -> T:
    """``prepare(*args)``; bad input (ValueError, FileNotFoundError) prints one ``error:`` line
    and exits with code 2, before anything is trained, computed or written. Errors after the
    preparation are not caught: they keep their traceback."""
    try:
        return prepare(*args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
