"""Hosts: the base classes a method is built on.

``host: solo`` uses solo-learn's ``BaseMethod`` / ``BaseMomentumMethod`` (its backbones, online
classifier, kNN, LARS, schedule); ``host: builtin`` uses the built-in equivalents; ``host: auto``
(default) picks solo when solo-learn is importable. A method class is written once against
``hosts/contract.py`` and :func:`compose` puts the chosen host's base behind it.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

from solo_multiview.hosts.contract import KViewMomentumMethod
from solo_multiview.hosts.keys import HOSTS


@dataclass(frozen=True)
class Host:
    name: str
    base_method: type
    base_momentum_method: type


def solo_available() -> bool:
    """True when solo-learn (the ``solo`` package) can be imported."""
    return importlib.util.find_spec("solo") is not None


def resolve_host_name(name: str) -> str:
    """``auto`` -> ``solo`` or ``builtin``; checks the value and solo-learn's presence."""
    if name not in HOSTS:
        raise ValueError(f"host: unknown host {name!r}; choose one of {HOSTS}")
    if name == "auto":
        return "solo" if solo_available() else "builtin"
    if name == "solo" and not solo_available():
        raise ValueError(
            "host: 'solo' needs solo-learn, which is not installed (see the README: install its "
            "GitHub source with --no-deps), or use host: builtin"
        )
    return name


@functools.cache
def get_host(name: str) -> Host:
    name = resolve_host_name(name)
    if name == "solo":
        from solo_multiview.hosts import solo_host as module
    else:
        from solo_multiview.hosts import builtin as module
    return Host(name, module.BaseMethod, module.BaseMomentumMethod)


def compose(method: type, host_name: str) -> type:
    """``method`` (written against the contract) on ``host_name``'s base class.

    The class is named ``<Method>__<host>`` and lives, for pickling, as an attribute of
    ``solo_multiview.methods`` (its module-level ``__getattr__`` rebuilds it on demand). The
    training guard (``hosts/guard.py``) is a callback the contract attaches, not a base."""
    return _compose(method, resolve_host_name(host_name))


@functools.cache
def _compose(method: type, host_name: str) -> type:
    host = get_host(host_name)
    momentum = issubclass(method, KViewMomentumMethod)
    base = host.base_momentum_method if momentum else host.base_method
    name = f"{method.__name__}__{host.name}"
    return type(name, (method, base),
                {"__module__": "solo_multiview.methods", "__qualname__": name})
