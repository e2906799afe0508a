"""Run one of solo-learn's own scripts with this plugin registered into solo-learn.

    python -m solo_multiview.solo_run /path/to/solo-learn/main_linear.py \\
        --config-path /abs/path/to/configs --config-name my_linear \\
        pretrained_feature_extractor=/path/to/run/mv_simclr-...-ep=99.ckpt

Before the script runs, solo-learn is patched and extended exactly as the solo host does it:
``hosts.solo_compat.apply()`` (its kNN metric on torchmetrics 1.x, our ``convnet`` in
``BaseMethod._BACKBONES``) and ``methods.register_with_solo()`` (``mv_simclr``, ... in
``solo.methods.METHODS``). The script then runs as ``__main__`` with ``sys.argv`` set to
``[script, *arguments]``, so solo-learn's ``main_linear.py`` (Hydra) builds our backbones and
loads our checkpoints, and its ``main_knn.py`` (argparse) rebuilds our methods with
``METHODS[args.json's method].load_from_checkpoint``.

Hydra resolves a relative ``--config-path`` against the *script's* folder, so give an absolute
one.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import List, Optional, Sequence

USAGE = ("usage: python -m solo_multiview.solo_run SCRIPT [ARGS ...]\n"
         "  SCRIPT: a solo-learn entry point (main_linear.py, main_knn.py, main_pretrain.py); "
         "ARGS are passed to it unchanged")


def register_plugin() -> None:
    """Applies the compat fixes and registers our methods and backbones into solo-learn
    (idempotent). Raises ``ImportError`` with the install hint when solo-learn is missing."""
    from solo_multiview.hosts import solo_available

    if not solo_available():
        raise ImportError("solo-learn (the 'solo' package) is not importable; install its GitHub "
                          "source with --no-deps (see the README, 'Adding solo-learn')")
    from solo_multiview.hosts import solo_compat
    from solo_multiview.methods import register_with_solo

    solo_compat.apply()
    register_with_solo()


def _script_path(script: str) -> Path:
    path = Path(script).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"solo_run: script {script!r} not found")
    return path


def _execute(path: Path, args: Sequence[str]) -> None:
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def run_script(script: str, args: Sequence[str] = ()) -> None:
    """Registers the plugin, then executes ``script`` as ``__main__`` with ``sys.argv =
    [script, *args]`` and the script's folder first on ``sys.path`` (as ``python script``
    would). ``sys.argv`` and ``sys.path`` are restored afterwards; the script's own exceptions
    (and ``SystemExit``) propagate."""
    path = _script_path(script)
    register_plugin()
    _execute(path, args)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: ``SCRIPT [ARGS ...]``; 2 with a one-line error when the script is missing
    or solo-learn is not installed."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    try:
        path = _script_path(argv[0])
        register_plugin()
    except (ImportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _execute(path, argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
