"""Source-to-source export of the project's pure-torch / numpy modules into solo-learn modules.

The exported loss and long-tail modules are not re-typed: they are this project's modules,
parsed with :mod:`ast` and re-assembled, so the code in a solo-learn checkout is the code the
plugin runs. The transformation is:

- relative imports (``from ._common import ...``, ``from .distributed import ...``) are rewritten
  to the solo-learn module that receives those names (a helper module assembled from the same
  sources, :func:`export_helpers`);
- functions can be renamed (solo-learn names losses ``<method>_loss_func``), by token, so code,
  not text, is renamed;
- docstrings take solo-learn's style: ``name (type): description. Defaults to x.`` in ``Args``
  (types from the annotations), ``type: description`` in ``Returns``, and Sphinx references to
  the project's modules point at the solo-learn modules;
- a top-level constant whose value depends on project-only code (a config dataclass) is written
  as the literal value it has at run time;
- solo-learn's licence header is put on top (read from the checkout, so it is theirs verbatim).
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass, field
from types import ModuleType
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

WIDTH = 100  # solo-learn's black line length (.pre-commit-config.yaml)


class ExportError(RuntimeError):
    """A module cannot be exported as it is (an import that has no solo-learn counterpart)."""


@dataclass
class Unit:
    """One top-level definition (function, class or assignment) of a source module."""

    name: str
    module: str
    order: Tuple[int, int]
    text: str  # source, with the comment lines directly above it
    node: ast.stmt
    refs: Set[str] = field(default_factory=set)


@dataclass
class Parsed:
    module: ModuleType
    docstring: Optional[str]
    imports: List[Tuple[ast.stmt, str]]  # (node, source line(s))
    units: Dict[str, Unit]
    relative: Dict[str, str]  # name imported relatively -> source module (dotted, absolute)


def _refs(node: ast.AST) -> Set[str]:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            base = sub
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name):
                names.add(base.id)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            # string annotations (``from __future__ import annotations``)
            try:
                expr = ast.parse(sub.value, mode="eval")
            except SyntaxError:
                continue
            names |= {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
    return names


def _annotation_refs(node: ast.stmt) -> Set[str]:
    names: Set[str] = set()
    anns = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if a is not None and a.annotation is not None:
                anns.append(a.annotation)
        if node.returns is not None:
            anns.append(node.returns)
    for ann in anns:
        names |= _refs(ann)
    return names


def _bound_names(node: ast.stmt) -> List[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _import_names(node: ast.stmt) -> List[str]:
    assert isinstance(node, (ast.Import, ast.ImportFrom))
    return [(a.asname or a.name).split(".")[0] for a in node.names]


def parse_module(module: ModuleType) -> Parsed:
    """Split a module into its docstring, imports and top-level definitions."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    tree = ast.parse(source)
    package = module.__name__.rpartition(".")[0]
    docstring = ast.get_docstring(tree, clean=False)
    imports: List[Tuple[ast.stmt, str]] = []
    units: Dict[str, Unit] = {}
    relative: Dict[str, str] = {}
    prev_end = 0
    for i, node in enumerate(tree.body):
        start = node.lineno
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.decorator_list:
            start = min(d.lineno for d in node.decorator_list)
        # comment lines directly above the statement belong to it
        first = start
        while first - 1 > prev_end and lines[first - 2].lstrip().startswith("#"):
            first -= 1
        text = "\n".join(lines[first - 1 : node.end_lineno])
        prev_end = node.end_lineno
        if i == 0 and docstring is not None and isinstance(node, ast.Expr):
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.module else base
            for a in node.names:
                relative[a.asname or a.name] = target
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append((node, text))
            continue
        for name in _bound_names(node):
            units[name] = Unit(name, module.__name__, (0, i), text, node, _refs(node))
    return Parsed(module, docstring, imports, units, relative)


# --------------------------------------------------------------------------- docstrings
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Returns|Raises|Yields):\s*$")


def _fill(prefix: str, body: str, indent: str) -> List[str]:
    """``prefix + body`` wrapped at WIDTH, continuation lines at ``indent``; unchanged when it
    fits."""
    one = prefix + body
    if len(one) <= WIDTH:
        return [one]
    # an inline literal (``a b``) is kept on one line
    protected = re.sub(r"``[^`]*``", lambda m: m.group(0).replace(" ", "\0"), body)
    wrapped = textwrap.wrap(
        protected,
        width=WIDTH,
        initial_indent=prefix,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    )
    return [line.replace("\0", " ") for line in wrapped]


def _blocks(lines: List[str], start: int, indent: int) -> Tuple[List[Tuple[int, int]], int]:
    """Items of a docstring section starting at ``start``: (first, end) line ranges of the lines
    at exactly ``indent`` and their deeper continuation lines; returns (items, section end)."""
    items = []
    i = start
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            break
        ind = len(line) - len(line.lstrip())
        if ind < indent:
            break
        if ind == indent:
            items.append([i, i + 1])
        elif items:
            items[-1][1] = i + 1
        i += 1
    return [tuple(x) for x in items], i


def solo_docstring(text: str, node: ast.FunctionDef, defaults_text: Mapping[str, str]) -> str:
    """Rewrite a Google-style docstring into solo-learn's: typed ``Args`` with ``Defaults to``,
    typed ``Returns``."""
    params = {}
    args = node.args
    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
        params[a.arg] = ast.unparse(a.annotation) if a.annotation is not None else None
    returns = ast.unparse(node.returns) if node.returns is not None else None
    lines = text.split("\n")
    out: List[str] = []
    i = 0
    while i < len(lines):
        match = _SECTION.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        out.append(lines[i])
        section = match.group(2)
        j = i + 1
        if j >= len(lines) or not lines[j].strip():
            i = j
            continue
        indent = len(lines[j]) - len(lines[j].lstrip())
        items, end = _blocks(lines, j, indent)
        pad = " " * indent
        for first, stop in items:
            block = [ln.strip() for ln in lines[first:stop]]
            head = block[0]
            body = " ".join(block)
            if section in ("Args", "Arguments"):
                m = re.match(r"^(\w+):\s*(.*)$", head)
                if m and m.group(1) in params:
                    name = m.group(1)
                    desc = " ".join([m.group(2), *block[1:]]).strip()
                    if name in defaults_text and "Default" not in desc:
                        desc = f"{desc.rstrip('.')}. Defaults to {defaults_text[name]}."
                    kind = f" ({params[name]})" if params[name] else ""
                    out.extend(_fill(f"{pad}{name}{kind}: ", desc, pad + "    "))
                    continue
            elif section == "Returns" and returns:
                # the whole section is one description of the returned value
                if first == items[0][0]:
                    body = " ".join(ln.strip() for ln in lines[first:end])
                    if re.match(r"^[\w\[\], .]+:\s", head):
                        out.extend(_fill(pad, body, pad + "    "))
                    else:
                        out.extend(_fill(f"{pad}{returns}: ", body, pad + "    "))
                continue
            out.extend(lines[first:stop])
        i = end
    return "\n".join(out)


def _function_defaults(node: ast.FunctionDef) -> Dict[str, str]:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    found = {}
    pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    for a, d in pairs:
        if isinstance(d, ast.Constant) and isinstance(d.value, str):
            found[a.arg] = f'"{d.value}"'
        else:
            found[a.arg] = ast.unparse(d)
    return found


def _rewrite_docstrings(text: str, references: Mapping[str, str]) -> str:
    """solo-learn docstring style for every function in ``text`` (a unit's source), and project
    module references (``:func:`.distributed.x```) pointed at the solo-learn modules."""
    tree = ast.parse(text)
    lines = text.split("\n")
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not (node.body and isinstance(node.body[0], ast.Expr)):
            continue
        doc = node.body[0].value
        if not (isinstance(doc, ast.Constant) and isinstance(doc.value, str)):
            continue
        edits.append((doc.lineno, doc.end_lineno, node))
    for start, end, node in sorted(edits, reverse=True):
        segment = "\n".join(lines[start - 1 : end])
        m = re.match(r'^(\s*)(r?)"""(.*)"""(\s*)$', segment, re.S)
        if not m:
            continue
        body = solo_docstring(m.group(3), node, _function_defaults(node))
        body = reflow_long_lines(_rewrite_references(body, references))
        new = f'{m.group(1)}{m.group(2)}"""{body}"""{m.group(4)}'
        lines[start - 1 : end] = new.split("\n")
    return _rewrite_references("\n".join(lines), references)


def reflow_long_lines(text: str, width: int = WIDTH) -> str:
    """Wrap the lines of docstrings / comments that a rewrite made longer than ``width``: the
    words past the limit move to the start of the next line of the same paragraph (or to a new
    line at the same indentation). Code lines are left to black."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if len(line) <= width or " " not in line.strip():
            i += 1
            continue
        cut = line.rfind(" ", 0, width + 1)
        indent = line[: len(line) - len(line.lstrip())]
        if cut <= len(indent):
            i += 1
            continue
        head, tail = line[:cut].rstrip(), line[cut + 1 :].strip()
        lines[i] = head
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        same_para = (
            nxt.strip()
            and nxt[: len(nxt) - len(nxt.lstrip())] == indent
            and not nxt.strip().startswith(("..", "-", "*", '"""', "#", ":"))
            and not line.lstrip().startswith("#")
        )
        if same_para:
            lines[i + 1] = f"{indent}{tail} {nxt.strip()}"
        else:
            lines.insert(i + 1, f"{indent}{'# ' if head.lstrip().startswith('#') else ''}{tail}")
        i += 1
    return "\n".join(lines)


def _rewrite_references(text: str, references: Mapping[str, str]) -> str:
    def repl(m: re.Match) -> str:
        role, target = m.group(1), m.group(2)
        head, _, rest = target.lstrip(".").partition(".")
        if target.startswith(".") and head in references:
            new = references[head] + (f".{rest}" if rest else "")
            return f":{role}:`{new}`"
        return m.group(0)

    text = re.sub(r":(\w+):`([.\w]+)`", repl, text)
    for short, target in references.items():
        text = re.sub(rf"``{re.escape(short)}\.(\w+)", rf"``{target}.\1", text)
    return text


def rename_tokens_in_text(text: str, renames: Mapping[str, str]) -> str:
    """Renamed names in prose (docstrings): whole words only."""
    for old, new in renames.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


def rename_tokens(text: str, renames: Mapping[str, str]) -> str:
    """Rename identifiers (NAME tokens) of a source text; strings and comments are left alone
    except for double-backquoted mentions of a renamed name in docstrings."""
    if not renames:
        return text
    result = []
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    for tok in tokens:
        if tok.type == tokenize.NAME and tok.string in renames:
            tok = tok._replace(string=renames[tok.string])
        elif tok.type == tokenize.STRING:
            s = tok.string
            for old, new in renames.items():
                s = re.sub(rf"``{re.escape(old)}``", f"``{new}``", s)
            tok = tok._replace(string=s)
        result.append(tok)
    return tokenize.untokenize(result)


# --------------------------------------------------------------------------- assembly
def licence_header(checkout_file: Optional[str]) -> str:
    """solo-learn's licence comment, read from one of its files (verbatim)."""
    if checkout_file is None:
        raise ExportError("no solo-learn file to read the licence header from")
    with open(checkout_file, encoding="utf-8") as f:
        header = []
        for line in f:
            if line.startswith("#") or (header and not line.strip()):
                header.append(line.rstrip("\n"))
            else:
                break
    while header and not header[-1].strip():
        header.pop()
    if not header or "solo-learn" not in header[0]:
        raise ExportError(f"{checkout_file} does not start with solo-learn's licence header")
    return "\n".join(header)


def _import_line(node: ast.stmt, keep: Set[str]) -> Optional[str]:
    if isinstance(node, ast.Import):
        names = [a for a in node.names if (a.asname or a.name).split(".")[0] in keep]
        if not names:
            return None
        return "\n".join(
            f"import {a.name}" + (f" as {a.asname}" if a.asname else "") for a in names
        )
    assert isinstance(node, ast.ImportFrom)
    if node.module == "__future__":
        return None  # added once, on top
    names = [a for a in node.names if (a.asname or a.name) in keep]
    if not names:
        return None
    items = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in names)
    return f"from {node.module} import {items}"


def _sorted_imports(lines: Iterable[str]) -> List[str]:
    merged: Dict[str, Set[str]] = {}
    plain = set()
    for line in lines:
        m = re.fullmatch(r"from (\S+) import (.+)", line)
        if m:
            merged.setdefault(m.group(1), set()).update(x.strip() for x in m.group(2).split(","))
        else:
            plain.add(line)
    lines = sorted(plain | {f"from {k} import {', '.join(sorted(v))}" for k, v in merged.items()})

    def group(line: str) -> int:
        root = line.split()[1].split(".")[0]
        if root in ("torch", "numpy", "omegaconf", "lightning"):
            return 1
        if root == "solo":
            return 2
        return 0

    out: List[str] = []
    for g in (0, 1, 2):
        part = [x for x in lines if group(x) == g]
        part.sort(key=lambda x: (x.startswith("from "), x))
        if part:
            if out:
                out.append("")
            out.extend(part)
    return out


def _project_only(parsed: Parsed, exported: Mapping[str, str] = None) -> Set[str]:
    """Names a module imports from the project by absolute import, from modules that have no
    solo-learn counterpart (``exported``: project module -> solo-learn module)."""
    exported = exported or {}
    bad = set()
    for node, _ in parsed.imports:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("solo_multiview"):
            if node.module not in exported:
                bad.update(_import_names(node))
        elif isinstance(node, ast.Import) and any(
            a.name.startswith("solo_multiview") for a in node.names
        ):
            bad.update(_import_names(node))
    return bad


@dataclass
class ModuleExport:
    """How one project module becomes one solo-learn module."""

    module: ModuleType
    target: str  # dotted solo-learn module, e.g. solo.losses.mttv
    renames: Dict[str, str] = field(default_factory=dict)
    #: names to keep (None: every top-level definition)
    names: Optional[Sequence[str]] = None
    #: replacement comment lines for units (e.g. a literal constant's description)
    comments: Dict[str, str] = field(default_factory=dict)
    docstring: Optional[str] = None  # None: the module's own
    #: import lines the appendix needs
    extra_imports: Sequence[str] = ()
    #: hand-written solo-learn code appended to the module
    appendix: str = ""


def _render_unit(unit: Unit, comments: Mapping[str, str]) -> str:
    text = unit.text
    if unit.name in comments:
        body = "\n".join(ln for ln in text.split("\n") if not ln.lstrip().startswith("#"))
        text = comments[unit.name] + "\n" + body
    return text


def assemble(
    exports: Sequence[ModuleExport],
    header: str,
    references: Mapping[str, str],
    import_targets: Mapping[str, str],
) -> Dict[str, str]:
    """Build the source of each exported module.

    Args:
        exports: the modules to write.
        header: solo-learn's licence comment.
        references: project module short name (``band_filter``) -> solo-learn dotted module, for
            Sphinx references in docstrings.
        import_targets: project dotted module -> solo-learn dotted module that provides its
            names (a relative import from a project module is rewritten to this).

    Returns:
        target dotted name -> source text (not yet black-formatted).
    """
    out = {}
    for exp in exports:
        parsed = parse_module(exp.module)
        bad = _project_only(parsed, import_targets)
        pool = parsed.units
        wanted = list(pool) if exp.names is None else list(exp.names)
        missing = [n for n in wanted if n not in pool]
        if missing:
            raise ExportError(f"{exp.module.__name__} defines no {missing}")
        # closure within the module; a constant that needs project-only code becomes a literal
        keep: Set[str] = set()
        literal: Set[str] = set()
        todo = list(wanted)
        while todo:
            name = todo.pop()
            if name in keep or name in literal:
                continue
            unit = pool[name]
            deps = unit.refs - {name}
            if deps & bad or (
                isinstance(unit.node, (ast.Assign, ast.AnnAssign))
                and any(d in pool and _needs_project(pool, d, bad) for d in deps)
            ):
                if isinstance(unit.node, (ast.Assign, ast.AnnAssign)):
                    literal.add(name)
                    continue
                raise ExportError(
                    f"{exp.module.__name__}.{name} depends on project-only code "
                    f"({sorted(deps & bad)}); it cannot be exported"
                )
            keep.add(name)
            todo.extend(d for d in deps if d in pool)
        units = sorted((pool[n] for n in keep | literal), key=lambda u: u.order)
        used: Set[str] = set()
        for u in units:
            if u.name in keep:
                used |= u.refs | _annotation_refs(u.node)
        if exp.appendix:
            used |= _refs(ast.parse(exp.appendix))
        # relative imports -> solo-learn modules
        relative_lines = []
        by_target: Dict[str, List[str]] = {}
        for name, source_module in parsed.relative.items():
            if name not in used:
                continue
            if source_module not in import_targets:
                raise ExportError(
                    f"{exp.module.__name__} imports {name} from {source_module}, which has no "
                    "solo-learn counterpart"
                )
            by_target.setdefault(import_targets[source_module], []).append(name)
        for target, names in by_target.items():
            if target == exp.target:
                continue
            relative_lines.append(f"from {target} import {', '.join(sorted(names))}")
        import_lines = []
        for node, _ in parsed.imports:
            if set(_import_names(node)) & bad:
                continue
            if isinstance(node, ast.ImportFrom) and node.module in import_targets:
                names = sorted(
                    a.asname or a.name for a in node.names if (a.asname or a.name) in used
                )
                if names:
                    target = import_targets[node.module]
                    relative_lines.append(f"from {target} import {', '.join(names)}")
                continue
            line = _import_line(node, used)
            if line:
                import_lines.extend(line.split("\n"))
        body = []
        for u in units:
            if u.name in literal:
                value = getattr(exp.module, u.name)
                comment = exp.comments.get(u.name, "")
                body.append((comment + "\n" if comment else "") + f"{u.name} = {value!r}")
            else:
                body.append(_render_unit(u, exp.comments))
        doc = exp.docstring if exp.docstring is not None else parsed.docstring
        if doc:
            doc = reflow_long_lines(
                _rewrite_references(rename_tokens_in_text(doc, exp.renames), references)
            )
        parts = [header, ""]
        if doc:
            prefix = "r" if "\\" in doc else ""
            parts.append(f'{prefix}"""{doc}"""')
            parts.append("")
        parts.append("from __future__ import annotations")
        parts.append("")
        parts.extend(_sorted_imports(import_lines + relative_lines + list(exp.extra_imports)))
        parts.append("")
        parts.append("")
        parts.append("\n\n\n".join(body))
        text = "\n".join(parts) + "\n" + exp.appendix
        text = rename_tokens(text, exp.renames)
        text = _rewrite_docstrings(text, references)
        text = _rewrite_references(text, references)
        out[exp.target] = text
    return out


def _needs_project(pool: Mapping[str, Unit], name: str, bad: Set[str], seen=None) -> bool:
    seen = set() if seen is None else seen
    if name in seen:
        return False
    seen.add(name)
    unit = pool[name]
    if unit.refs & bad:
        return True
    return any(_needs_project(pool, d, bad, seen) for d in unit.refs if d in pool and d != name)


def helper_closure(
    modules: Sequence[ModuleType], needed: Iterable[str]
) -> Tuple[List[Unit], Set[str], List[Tuple[ast.stmt, str]]]:
    """The definitions of ``needed`` (and what they use) from several helper modules, in
    module then line order, with the imports they need."""
    parsed = [parse_module(m) for m in modules]
    pool: Dict[str, Unit] = {}
    for k, p in enumerate(parsed):
        for name, unit in p.units.items():
            unit.order = (k, unit.order[1])
            pool.setdefault(name, unit)
    keep: Set[str] = set()
    todo = list(needed)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        if name not in pool:
            raise ExportError(f"no helper module defines {name}")
        keep.add(name)
        todo.extend(d for d in pool[name].refs if d in pool and d != name)
    units = sorted((pool[n] for n in keep), key=lambda u: u.order)
    used = set()
    for u in units:
        used |= u.refs | _annotation_refs(u.node)
    imports = [imp for p in parsed for imp in p.imports]
    return units, used, imports


def export_helpers(
    modules: Sequence[ModuleType],
    needed: Iterable[str],
    header: str,
    docstring: str,
    references: Mapping[str, str],
) -> str:
    """One solo-learn helper module holding ``needed`` (and their dependencies) from ``modules``
    (e.g. losses/_common.py, losses/distributed.py, losses/band_filter.py)."""
    units, used, imports = helper_closure(modules, needed)
    for p in (parse_module(m) for m in modules):
        bad = _project_only(p)
        if bad & used:
            raise ExportError(f"helpers use project-only names {sorted(bad & used)}")
    lines = []
    for node, _ in imports:
        line = _import_line(node, used)
        if line:
            lines.extend(line.split("\n"))
    docstring = reflow_long_lines(_rewrite_references(docstring, references))
    parts = [header, "", f'"""{docstring}"""', "", "from __future__ import annotations", ""]
    parts.extend(_sorted_imports(lines))
    parts.extend(["", "", "\n\n\n".join(u.text for u in units)])
    text = "\n".join(parts) + "\n"
    text = _rewrite_docstrings(text, references)
    return text


def names_imported_relatively(module: ModuleType) -> Dict[str, str]:
    """name -> project module it is imported from, for a module's relative imports."""
    return parse_module(module).relative
