"""Declared config keys: one dataclass field per key, parsed once, read-only afterwards.

Every module that owns config keys declares them as a dataclass whose fields are made with
:func:`setting` (a leaf: type from the annotation, default, allowed values or range, one-line
help) or :func:`section` (a nested node). An entry point assembles the owners' dataclasses into
one root (:func:`assemble`) and :func:`parse` checks a user config against it before any data is
read or model built:

- an unknown key is refused with the closest valid key ("did you mean ..."), searched among the
  keys of the same node and among every key of the schema (a key written at the wrong level);
- a value of the wrong type, outside its range or not among its choices is refused with the
  key, the value and what would be valid;
- a required key (no default) that is missing is refused;
- the result is an omegaconf ``DictConfig`` typed by the dataclasses, with every default filled.
  Entry points make it read-only once the derived keys (``data.num_large_crops`` ...) are set.

Errors are :class:`ConfigError` (a ``ValueError``): the entry points print its one line and exit
before anything is written. solo-learn's convention of writing ``None`` as the string "None" is
honoured for keys that accept null.

The tables of ``--keys`` and of the README come from :func:`describe` (``config/keys.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import omegaconf
from omegaconf import OmegaConf


class ConfigError(ValueError):
    """A config key is unknown, missing, of the wrong type or out of range."""


_META = "solo_multiview"


def setting(default: Any = MISSING, help: str = "", *, choices: Optional[Sequence[Any]] = None,
            minimum: Optional[float] = None, maximum: Optional[float] = None,
            above: Optional[float] = None, below: Optional[float] = None,
            unused: bool = False, expected: Optional[str] = None) -> Any:
    """One config key (a dataclass field). ``minimum``/``maximum`` are inclusive bounds,
    ``above``/``below`` exclusive ones; ``choices`` the allowed values; no ``default`` makes the
    key required. ``unused``: accepted for solo-learn compatibility, without effect here (a
    non-default value is reported by :func:`unused_settings`). ``expected`` replaces the
    generated "expected ..." phrase of error messages."""
    meta = {_META: {"help": help, "choices": tuple(choices) if choices is not None else None,
                    "minimum": minimum, "maximum": maximum, "above": above, "below": below,
                    "unused": unused, "expected": expected}}
    if default is MISSING:
        # omegaconf's "???" (mandatory): a dataclass default, so required keys may follow
        # optional ones in declaration order; parse() refuses it when the user leaves it out.
        return dataclasses.field(default=omegaconf.MISSING, metadata=meta)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str = "") -> Any:
    """A nested node whose keys are the fields of dataclass ``cls``."""
    return dataclasses.field(default_factory=cls, metadata={_META: {"help": help}})


def assemble(name: str, parts: Sequence[Tuple[str, Any, Any]]) -> type:
    """A root dataclass from ``(key, type, field)`` triples contributed by several owners."""
    return dataclasses.make_dataclass(name, [(key, tp, fld) for key, tp, fld in parts])


# --------------------------------------------------------------------------- type helpers
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> Tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(tp)):
            return args[0], True
    return tp, False


def _list_item(tp: Any) -> Optional[Any]:
    if typing.get_origin(tp) in (list, List, Sequence):
        args = typing.get_args(tp)
        return args[0] if args else Any
    return None


def _type_name(tp: Any) -> str:
    tp, nullable = _strip_optional(tp)
    item = _list_item(tp)
    if item is not None:
        name = f"list of {_type_name(item)}"
    elif tp is Any:
        name = "any"
    elif typing.get_origin(tp) in (dict, Dict, Mapping):
        name = "mapping"
    elif dataclasses.is_dataclass(tp):
        name = "node"
    else:
        name = {int: "int", float: "float", str: "str", bool: "bool"}.get(tp, str(tp))
    return f"{name} or null" if nullable else name


def _meta(fld: dataclasses.Field) -> Dict[str, Any]:
    return fld.metadata.get(_META, {})


def _default(fld: dataclasses.Field) -> Any:
    if fld.default == omegaconf.MISSING:
        return MISSING
    if fld.default is not MISSING:
        return fld.default
    if fld.default_factory is not MISSING:  # type: ignore[misc]
        return fld.default_factory()  # type: ignore[misc]
    return MISSING


# --------------------------------------------------------------------------- description
@dataclass(frozen=True)
class KeyInfo:
    """One leaf of a schema, for listings and documentation."""

    key: str
    type: str
    default: Any
    allowed: str
    help: str
    unused: bool = False


def _allowed(meta: Mapping[str, Any]) -> str:
    if meta.get("choices") is not None:
        return " | ".join(str(c) for c in meta["choices"])
    parts = []
    if meta.get("minimum") is not None:
        parts.append(f">= {meta['minimum']}")
    if meta.get("above") is not None:
        parts.append(f"> {meta['above']}")
    if meta.get("maximum") is not None:
        parts.append(f"<= {meta['maximum']}")
    if meta.get("below") is not None:
        parts.append(f"< {meta['below']}")
    return ", ".join(parts)


def describe(cls: type, prefix: str = "") -> Iterator[KeyInfo]:
    """Every leaf key of ``cls`` in declaration order (list items as ``key[*].leaf``)."""
    hints = _hints(cls)
    for fld in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[fld.name])
        key = f"{prefix}{fld.name}"
        item = _list_item(tp)
        if dataclasses.is_dataclass(tp):
            yield from describe(tp, key + ".")
        elif item is not None and dataclasses.is_dataclass(item):
            yield from describe(item, key + "[*].")
        else:
            meta = _meta(fld)
            default = _default(fld)
            yield KeyInfo(key, _type_name(hints[fld.name]),
                          "(required)" if default is MISSING else default, _allowed(meta),
                          meta.get("help", ""), bool(meta.get("unused", False)))


def all_keys(cls: type) -> List[str]:
    """Dotted names of every node and leaf of ``cls`` (for "did you mean")."""
    names: List[str] = []
    hints = _hints(cls)
    for fld in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[fld.name])
        names.append(fld.name)
        item = _list_item(tp)
        inner = tp if dataclasses.is_dataclass(tp) else item
        if inner is not None and dataclasses.is_dataclass(inner):
            sep = "." if inner is tp else "[*]."
            names += [f"{fld.name}{sep}{sub}" for sub in all_keys(inner)]
    return names


# --------------------------------------------------------------------------- checking
def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _suggest(key: str, node_keys: Sequence[str], everything: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, node_keys, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    leaf = [name for name in everything if name.rsplit(".", 1)[-1] == key]
    if leaf:
        return f"; it is declared as {leaf[0]!r}"
    close = difflib.get_close_matches(key, [n.rsplit(".", 1)[-1] for n in everything], n=1,
                                      cutoff=0.75)
    if close:
        where = next(n for n in everything if n.rsplit(".", 1)[-1] == close[0])
        return f"; did you mean {where!r}?"
    return f"; the keys here are {sorted(node_keys)}" if len(node_keys) <= 20 else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounds(meta: Mapping[str, Any]) -> str:
    low = (f">= {meta['minimum']}" if meta.get("minimum") is not None
           else f"> {meta['above']}" if meta.get("above") is not None else "")
    high = (f"<= {meta['maximum']}" if meta.get("maximum") is not None
            else f"< {meta['below']}" if meta.get("below") is not None else "")
    if low and high:
        left = "[" if low.startswith(">=") else "("
        right = "]" if high.startswith("<=") else ")"
        return f"in {left}{low.split()[1]}, {high.split()[1]}{right}"
    return low or high


def _expected(tp: Any, meta: Mapping[str, Any]) -> str:
    """What a valid value is, in words: "a positive int", "a number > 0", ..."""
    if meta.get("expected"):
        return str(meta["expected"])
    base, nullable = _strip_optional(tp)
    bounds = _bounds(meta)
    if meta.get("choices") is not None:
        what = f"one of {list(meta['choices'])}"
    elif base is int:
        what = ("a positive int" if meta.get("minimum") == 1 and meta.get("maximum") is None
                else f"an int {bounds}".rstrip())
    elif base is float:
        what = f"a number {bounds}".rstrip()
    elif base is bool:
        what = "true or false"
    elif base is str:
        what = "a string"
    else:
        what = _type_name(tp)
    return f"{what} or null" if nullable and base is not Any else what


def _fail(path: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> ConfigError:
    help_text = f" ({meta['help']})" if meta.get("help") else ""
    return ConfigError(f"{path}: got {value!r}; expected {_expected(tp, meta)}{help_text}")


def _check_leaf(path: str, tp: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    """The value, converted where lossless (int -> float), or ConfigError."""
    base, nullable = _strip_optional(tp)
    if value is None or value == "None" and nullable:
        if nullable or base is Any:
            return None
        raise _fail(path, None, tp, meta)
    item = _list_item(base)
    if item is not None:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, value, tp, meta)
        return [_check_leaf(_join(path, i), item, v, {}) for i, v in enumerate(value)]
    ok = True
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = _is_number(value)
    elif base is str:
        ok = isinstance(value, str)
    if not ok:
        raise _fail(path, value, tp, meta)
    _check_range(path, value, tp, meta)  # on the value as given, so messages show it so
    return float(value) if base is float else value


def _check_range(path: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{path}: unknown value {value!r}; choose one of {list(choices)}{hint}")
    if not _is_number(value):
        return
    bad = not math.isfinite(value) and any(
        meta.get(k) is not None for k in ("minimum", "maximum", "above", "below"))
    bad |= meta.get("minimum") is not None and value < meta["minimum"]
    bad |= meta.get("maximum") is not None and value > meta["maximum"]
    bad |= meta.get("above") is not None and not value > meta["above"]
    bad |= meta.get("below") is not None and not value < meta["below"]
    if bad:
        raise _fail(path, value, tp, meta)


def _check_node(path: str, cls: type, user: Any, everything: Sequence[str]) -> Dict[str, Any]:
    if user is None or user == "None":
        user = {}
    if not isinstance(user, Mapping):
        raise ConfigError(f"{path}: got {user!r}; expected a node with keys "
                          f"{[f.name for f in dataclasses.fields(cls)]}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in user:
        if key not in fields:
            raise ConfigError(f"{_join(path, key)}: unknown key"
                              f"{_suggest(str(key), list(fields), everything)}")
    out: Dict[str, Any] = {}
    for name, fld in fields.items():
        where = _join(path, name)
        tp, nullable = _strip_optional(hints[name])
        item = _list_item(tp)
        if name not in user:
            if _default(fld) is MISSING:
                meta = _meta(fld)
                help_text = f" ({meta['help']})" if meta.get("help") else ""
                raise ConfigError(f"{where}: missing; expected {_expected(hints[name], meta)}"
                                  f"{help_text}")
            continue
        value = user[name]
        if dataclasses.is_dataclass(tp):
            if value is None and nullable:
                out[name] = None
            else:
                out[name] = _check_node(where, tp, value, everything)
        elif item is not None and dataclasses.is_dataclass(item):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where}: got {value!r}; expected a list of nodes")
            out[name] = [_check_node(_join(where, i), item, v, everything)
                         for i, v in enumerate(value)]
        else:
            out[name] = _check_leaf(where, hints[name], value, _meta(fld))
    return out


def resolved(user: Any) -> Dict[str, Any]:
    """A config as plain containers, interpolations resolved (ConfigError naming the key when one
    cannot be)."""
    if isinstance(user, (omegaconf.DictConfig, omegaconf.ListConfig)):
        try:
            return OmegaConf.to_container(user, resolve=True)  # type: ignore[return-value]
        except omegaconf.errors.OmegaConfBaseException as error:
            key = getattr(error, "full_key", "") or "config"
            raise ConfigError(f"{key}: cannot resolve an interpolation "
                              f"({str(error).splitlines()[0]})") from None
    return {k: OmegaConf.to_container(v, resolve=True)
            if isinstance(v, (omegaconf.DictConfig, omegaconf.ListConfig)) else v
            for k, v in dict(user).items()}


def check(cls: type, user: Any, prefix: str = "") -> Dict[str, Any]:
    """``user`` (resolved) checked against ``cls``: a plain dict of the keys the user gave,
    values converted where lossless; ``prefix`` is the node's dotted path, for messages.
    Raises :class:`ConfigError`."""
    return _check_node(prefix, cls, resolved(user), all_keys(cls))


def parse(cls: type, user: Any) -> omegaconf.DictConfig:
    """The user config checked against ``cls`` and merged onto its defaults (module docstring).
    The result is writable; the entry point calls ``OmegaConf.set_readonly`` when done."""
    checked = check(cls, user)
    cfg = OmegaConf.merge(OmegaConf.structured(cls), checked)
    assert isinstance(cfg, omegaconf.DictConfig)
    run_node_checks(cls, cfg)
    return cfg


def run_node_checks(cls: type, node: Any, path: str = "") -> None:
    """Calls ``check_node(node, path)`` of every declared node class that defines one (rules
    across the keys of one node, e.g. the band filter's ``low < high``), depth first."""
    if node is None:
        return
    checker = getattr(cls, "check_node", None)
    if checker is not None:
        checker(node, path)
    hints = _hints(cls)
    for fld in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[fld.name])
        item = _list_item(tp)
        child = node.get(fld.name) if hasattr(node, "get") else None
        if dataclasses.is_dataclass(tp):
            run_node_checks(tp, child, _join(path, fld.name))
        elif item is not None and dataclasses.is_dataclass(item) and child is not None:
            for i, entry in enumerate(child):
                run_node_checks(item, entry, _join(_join(path, fld.name), i))


def unused_settings(cls: type, cfg: Any) -> List[str]:
    """Keys declared ``unused`` whose value in ``cfg`` differs from the default."""
    found = []
    for info in describe(cls):
        if info.unused and "[*]" not in info.key:
            value = OmegaConf.select(cfg, info.key) if isinstance(cfg, omegaconf.DictConfig) \
                else None
            if value is not None and value != info.default:
                found.append(info.key)
    return found


def overrides_of(cls: type, name: Optional[str] = None) -> type:
    """A dataclass with the keys of ``cls``, each optional with default null (same help and
    allowed values): a node whose set keys override another config's values key by key, so the
    keys stay declared once, by ``cls``'s owner."""
    hints = _hints(cls)
    parts = []
    for fld in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[fld.name])
        if dataclasses.is_dataclass(tp):
            inner = overrides_of(tp)
            parts.append((fld.name, Optional[inner], dataclasses.field(default=None,
                                                                       metadata=fld.metadata)))
        else:
            parts.append((fld.name, Optional[tp], dataclasses.field(default=None,
                                                                    metadata=fld.metadata)))
    return dataclasses.make_dataclass(name or f"{cls.__name__}Overrides", parts)
