"""Which methods the command writes, and how each one's solo-learn files are filled in.

A method is exportable when its loss is a pure-torch module of ``solo_multiview/losses`` (exported
by source, :mod:`.source`) and it has a solo-learn class template (:mod:`.templates`). Every other
method of ``solo_multiview.methods.METHODS`` is listed in :data:`LEFT_OUT` with the reason; a
project test checks that the two lists cover the registry, so a new method gets a decision.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass, field
from string import Template
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence

from solo_multiview.config.schema import describe
from solo_multiview.losses import mttv as mttv_loss
from solo_multiview.losses import mv_simclr as mv_simclr_loss
from solo_multiview.methods import METHODS

from . import solo_tests, templates
from .source import ExportError, _fill, reflow_long_lines


@dataclass(frozen=True)
class SoloMethod:
    """One method as solo-learn gets it."""

    name: str  # the registry name, the same on both sides
    cls: str  # solo-learn class name
    title: str  # docs page title
    readme_line: str
    loss_module: ModuleType
    loss_renames: Dict[str, str]  # plugin function -> solo-learn name (``<method>_loss_func``)
    method_template: Template
    loss_test: Template
    method_test: Template
    momentum: bool
    #: plugin docstring phrases -> solo-learn ones (project paths do not exist there)
    doc_subs: Dict[str, str] = field(default_factory=dict)
    #: method_kwargs written by the template itself (not generated from Kwargs)
    template_keys: Sequence[str] = ()
    base_config: str = ""  # scripts/pretrain/base/<file> of the plugin
    augmentation: str = ""  # scripts/pretrain/augmentations/<file> of the plugin
    solo_augmentation: str = ""  # its name under solo-learn's scripts/pretrain/cifar/augmentations

    @property
    def module(self) -> str:
        return self.name

    @property
    def plugin_class(self) -> type:
        return METHODS[self.name]

    @property
    def loss_functions(self) -> List[str]:
        return list(self.loss_renames.values())


SUPPORTED: Dict[str, SoloMethod] = {
    m.name: m
    for m in (
        SoloMethod(
            name="mttv",
            cls="MTTV",
            title="MTTV",
            readme_line="* [MTTV / MIMV](https://arxiv.org/abs/2509.08469)",
            loss_module=mttv_loss,
            loss_renames={"mttv_infonce": "mttv_loss_func"},
            method_template=templates.MTTV_METHOD,
            loss_test=solo_tests.MTTV_LOSS_TEST,
            method_test=solo_tests.MTTV_METHOD_TEST,
            momentum=True,
            doc_subs={
                "(``data/pairing.py``)": "(solo.data.pretrain_dataloader.PartnerPairDataset)",
                "``losses/mttv.py``": "solo.losses.mttv.mttv_loss_func",
            },
            base_config="mttv_cifar.yaml",
            augmentation="cifar10_mttv.yaml",
            solo_augmentation="mttv.yaml",
        ),
        SoloMethod(
            name="mv_simclr",
            cls="MVSimCLR",
            title="SimCLR with K views",
            readme_line="* [Multi-view SimCLR (K views)](https://arxiv.org/abs/2004.11362)",
            loss_module=mv_simclr_loss,
            loss_renames={"mv_nt_xent": "mv_simclr_loss_func"},
            method_template=templates.MV_SIMCLR_METHOD,
            loss_test=solo_tests.MV_SIMCLR_LOSS_TEST,
            method_test=solo_tests.MV_SIMCLR_METHOD_TEST,
            momentum=False,
            doc_subs={
                "(``losses/mv_simclr.py``)": "(solo.losses.mv_simclr.mv_simclr_loss_func)",
                " All K large crops go through the backbone in one call.": "",
            },
            template_keys=("num_views",),
            base_config="mv_simclr_cifar.yaml",
            augmentation="cifar_symmetric.yaml",
            solo_augmentation="symmetric_kview.yaml",
        ),
    )
}

#: registry methods the command does not write, and why
LEFT_OUT: Dict[str, str] = {
    "mv_byol": "solo-learn's BYOL already sums its loss over every (crop, large crop) pair; the "
    "K-view version averages the same pairs (scale independent of K): a change to BYOL (the "
    "K-crop flag and the normalisation), left for a follow-up rather than a new method",
    "mv_simsiam": "as mv_byol, for solo-learn's SimSiam",
    "mv_barlow_twins": "the K-view average of pairwise Barlow Twins losses; solo-learn's "
    "barlow_loss_func takes two views, so it needs its own K-view loss review (own PR)",
    "mv_vicreg": "as mv_barlow_twins, for VICReg (own PR)",
    "mv_mocov2plus": "needs one queue per view and solo-learn's queue handling rewritten for K "
    "views (own PR)",
    "fastsiam": "a new method (K - 1 targets averaged); own PR",
    "polyview": "a new method family (three Poly-View forms); own PR",
    "mv_infonce": "a new method (MV-InfoNCE); own PR",
    "mv_dhel": "a new method (MV-DHEL); own PR",
    "mmcr": "a new method (nuclear-norm objective); own PR",
    "emp_ssl": "a new method (coding-rate objective, many patches); own PR",
}


def check_coverage() -> None:
    """Every registered method is either written or left out with a reason."""
    missing = sorted(set(METHODS) - set(SUPPORTED) - set(LEFT_OUT))
    stale = sorted((set(SUPPORTED) | set(LEFT_OUT)) - set(METHODS))
    if missing or stale:
        raise ExportError(
            f"solo_multiview.upstream: methods without a decision {missing}, unknown {stale}"
        )


# --------------------------------------------------------------------------- rendering
_PROJECT_PATH = re.compile(
    r"``(?:losses|data|hosts|methods|config|training|eval)/|:class:`\w+Kwargs`"
)


def description(method: SoloMethod, indent: int = 8) -> str:
    """The plugin class docstring, for the solo-learn class: its "Keys:" paragraph (the
    plugin's dataclasses) dropped and project paths replaced."""
    doc = inspect.cleandoc(method.plugin_class.__doc__ or "")
    paragraphs = [p for p in doc.split("\n\n") if not p.startswith("Keys:")]
    text = "\n\n".join(paragraphs)
    for old, new in method.doc_subs.items():
        if old not in text:
            raise ExportError(
                f"{method.plugin_class.__name__}'s docstring no longer says {old!r}: update "
                "solo_multiview/upstream/methods.py"
            )
        text = text.replace(old, new)
    bad = _PROJECT_PATH.search(text)
    if bad:
        raise ExportError(
            f"{method.plugin_class.__name__}'s docstring names project code ({bad.group(0)!r}); "
            "add a substitution in solo_multiview/upstream/methods.py"
        )
    pad = " " * indent
    text = "\n".join(pad + line if line.strip() else "" for line in text.split("\n"))
    return reflow_long_lines(text)


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _type(info_type: str) -> str:
    base = info_type.replace(" or null", "")
    kind = {"int": "int", "float": "float", "str": "str", "bool": "bool"}.get(base, base)
    return f"Optional[{kind}]" if info_type.endswith("or null") else kind


def _default_expr(section: str, value: Any) -> str:
    """A default as Python source; an interpolation ``${.key}`` reads that key."""
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{\.(\w+)\}", value)
        if m:
            return f"cfg.{section}.{m.group(1)}"
    return _literal(value)


def settings_lines(cls: type, section: str, skip: Sequence[str] = ()) -> List[str]:
    """``add_and_assert_specific_cfg`` lines for the keys of a plugin dataclass: omegaconf_select
    with the declared default, an assert for required keys, choices and bounds."""
    lines: List[str] = []
    nodes = set()
    for info in describe(cls):
        if info.key in skip:
            continue
        path = f"{section}.{info.key}"
        parent = path.rpartition(".")[0]
        if parent != section and parent not in nodes:
            nodes.add(parent)
            lines.append(f'cfg.{parent} = omegaconf_select(cfg, "{parent}", {{}})')
        if info.default == "(required)":
            lines.append(f'assert not omegaconf.OmegaConf.is_missing(cfg, "{path}")')
        else:
            default = _default_expr(section, info.default)
            lines.append(f'cfg.{path} = omegaconf_select(cfg, "{path}", {default})')
        allowed = info.allowed
        if not allowed:
            continue
        if allowed[0] in "<>":
            for part in allowed.split(", "):
                op, bound = part.split(" ")
                value = f"cfg.{path}"
                check = f"{value} {op} {bound}"
                if info.type.endswith("or null"):
                    check = f"{value} is None or {check}"
                lines.append(f"assert {check}")
        else:
            choices = ", ".join(_literal(c) for c in allowed.split(" | "))
            lines.append(f"assert cfg.{path} in [{choices}]")
    return lines


def settings_doc(cls: type, section: str, indent: int = 12, skip: Sequence[str] = ()) -> List[str]:
    """The "Extra cfg settings" lines of a solo-learn ``__init__`` docstring, from the plugin's
    declared keys (type, help, default)."""
    out = [" " * indent + f"{section}:"]
    shown_nodes = set()
    for info in describe(cls):
        if info.key in skip:
            continue
        parts = info.key.split(".")
        for depth in range(1, len(parts)):
            node = ".".join(parts[:depth])
            if node not in shown_nodes:
                shown_nodes.add(node)
                out.append(" " * (indent + 4 * depth) + f"{parts[depth - 1]}:")
        pad = " " * (indent + 4 * len(parts))
        default = info.default
        if isinstance(default, str) and default.startswith("${."):
            default = f"the value of {default[3:-1]}"
        help_text = info.help.rstrip(".")
        quote = isinstance(default, str) and default != "(required)" and " " not in default
        shown = f'"{default}"' if quote else default
        tail = "Required." if default == "(required)" else f"Defaults to {shown}."
        out += _fill(
            f"{pad}{parts[-1]} ({_type(info.type)}): ", f"{help_text}. {tail}", pad + "    "
        )
    return out


def _indent(lines: Sequence[str], n: int) -> str:
    return "\n".join((" " * n + line) if line else "" for line in lines)


def render_method(method: SoloMethod, header: str) -> str:
    cls = method.plugin_class
    kwargs_cls = cls.Kwargs
    doc = settings_doc(kwargs_cls, "method_kwargs", skip=method.template_keys)
    values: Dict[str, str] = {
        "header": header,
        "description": description(method),
        "kwargs_settings": _indent(
            settings_lines(kwargs_cls, "method_kwargs", skip=method.template_keys), 8
        ),
        "min_views": str(cls.min_views),
    }
    if method.momentum:
        momentum_cls = cls.Momentum
        doc += settings_doc(momentum_cls, "momentum")
        momentum = [
            line for line in settings_lines(momentum_cls, "momentum") if "omegaconf_select" in line
        ]
        values["momentum_settings"] = _indent(momentum, 8)
    values["settings"] = "\n".join(doc)
    return method.method_template.substitute(values)


def fields_of(cls: type) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


def render_docs(method: SoloMethod) -> Dict[str, str]:
    extra = ""
    if method.momentum:
        extra = Template(templates.MOMENTUM_DOC_EXTRA).substitute(
            module=method.module, cls=method.cls
        )
    method_page = templates.METHOD_DOC.substitute(
        title=method.title,
        underline="=" * len(method.title),
        module=method.module,
        cls=method.cls,
        extra=extra,
    )
    (function,) = method.loss_functions
    loss_page = templates.LOSS_DOC.substitute(
        title=method.title,
        underline="-" * len(method.title),
        module=method.module,
        function=function,
    )
    return {
        f"docs/source/solo/methods/{method.module}.rst": method_page,
        f"docs/source/solo/losses/{method.module}.rst": loss_page,
    }


def resolve(names: Optional[Sequence[str]]) -> List[SoloMethod]:
    """The methods to write (default: every supported one), refusing the others with the reason."""
    check_coverage()
    if not names:
        return list(SUPPORTED.values())
    out = []
    for name in names:
        if name in SUPPORTED:
            out.append(SUPPORTED[name])
        elif name in LEFT_OUT:
            raise ExportError(f"--methods {name}: not written by this command: {LEFT_OUT[name]}")
        else:
            raise ExportError(
                f"--methods {name}: unknown; supported: {', '.join(sorted(SUPPORTED))}"
            )
    return sorted(out, key=lambda m: m.name)
