"""K-view methods and the METHODS registry.

Each method file defines one host-neutral class (written against ``hosts/contract.py``);
:func:`method_class` composes it with the configured host. On the solo host the composed classes
are also registered into ``solo.methods.METHODS`` (see :func:`register_with_solo`), so
solo-learn's own scripts find them by name.
"""

from __future__ import annotations

from typing import Any, Dict

import omegaconf
from omegaconf import OmegaConf

from solo_multiview.data.views import ViewSpec
from solo_multiview.hosts import compose, resolve_host_name
from solo_multiview.methods.emp_ssl import EMPSSL
from solo_multiview.methods.fastsiam import FastSiam
from solo_multiview.methods.mmcr import MMCR
from solo_multiview.methods.mttv import MTTV
from solo_multiview.methods.mv_barlow_twins import MVBarlowTwins
from solo_multiview.methods.mv_byol import MVBYOL
from solo_multiview.methods.mv_dhel import MVDHEL
from solo_multiview.methods.mv_infonce import MVInfoNCE
from solo_multiview.methods.mv_mocov2plus import MVMoCoV2Plus
from solo_multiview.methods.mv_simclr import MVSimCLR
from solo_multiview.methods.mv_simsiam import MVSimSiam
from solo_multiview.methods.mv_vicreg import MVVICReg
from solo_multiview.methods.polyview import PolyView

METHODS: Dict[str, type] = {
    "mttv": MTTV,
    "mv_simclr": MVSimCLR,
    "mv_byol": MVBYOL,
    "mv_simsiam": MVSimSiam,
    "mv_barlow_twins": MVBarlowTwins,
    "mv_vicreg": MVVICReg,
    "mv_mocov2plus": MVMoCoV2Plus,
    "fastsiam": FastSiam,
    "polyview": PolyView,
    "mv_infonce": MVInfoNCE,
    "mv_dhel": MVDHEL,
    "mmcr": MMCR,
    "emp_ssl": EMPSSL,
}


def method_class(name: str, host: str = "auto") -> type:
    """The class of method ``name`` built on ``host`` (``auto`` | ``solo`` | ``builtin``)."""
    if name not in METHODS:
        raise ValueError(f"method: unknown method {name!r}; choose one of {sorted(METHODS)}")
    host = resolve_host_name(host)
    if host == "solo":
        register_with_solo()
    return compose(METHODS[name], host)


def build_method(cfg: omegaconf.DictConfig) -> Any:
    """Instantiates ``cfg.method`` (a parsed config) on ``cfg.host``. solo-learn's base class
    writes its defaults into the config it gets (values the parser has already set), so the
    solo host gets a writable copy; the built-in host reads the parsed config as it is."""
    host = resolve_host_name(cfg.get("host", "auto"))
    if host == "solo":
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return method_class(cfg.method, host)(cfg)


def view_spec(cfg: omegaconf.DictConfig) -> ViewSpec:
    """The views the config's method trains on (``data/views.py``)."""
    return METHODS[cfg.method].views(cfg)


def register_with_solo() -> None:
    """Adds every method, built on the solo host, to ``solo.methods.METHODS`` (idempotent)."""
    from solo.methods import METHODS as SOLO_METHODS

    for name, method in METHODS.items():
        SOLO_METHODS[name] = compose(method, "solo")


def __getattr__(name: str) -> type:
    # Composed classes are named "<Class>__<host>" with this module as their home, so pickle
    # (e.g. ddp_spawn) can find them: rebuild on first access.
    class_name, sep, host = name.rpartition("__")
    if sep:
        for method in METHODS.values():
            if method.__name__ == class_name:
                return compose(method, host)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
