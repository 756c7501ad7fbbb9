"""Pass: read the root file and everything it imports, depth first; reject cycles and missing files.

`import "std/…"` names a file of the standard library (netc/stdlib/std/); any other path is
relative to the importing file. Each file is parsed once, however often it is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources

from netc.diagnostics import Reporter, register_source
from netc.dsl import ast as A
from netc.dsl.parser import parse
from netc.source import SourceFile


@dataclass
class Unit:
    """The parsed files of one compilation, root first, in a stable order."""

    modules: list[A.Module] = field(default_factory=list)
    sources: dict[str, SourceFile] = field(default_factory=dict)


def stdlib_dir() -> str:
    return str(resources.files("netc.stdlib").joinpath("std"))


def _locate(importer: str, target: str) -> str:
    if target.startswith("std/"):
        return os.path.join(stdlib_dir(), target[len("std/"):])
    base = os.path.dirname(importer) if importer and not importer.startswith("<") else os.getcwd()
    return os.path.normpath(os.path.join(base, target))


def display_path(path: str) -> str:
    """How a file is named in diagnostics and rule locations: stdlib files as std/…, others relative."""
    std = stdlib_dir()
    if path.startswith(std + os.sep):
        return "std/" + os.path.relpath(path, std)
    if path.startswith("<"):
        return path
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def read_source(path: str) -> SourceFile:
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    src = SourceFile.from_text(display_path(path), text)
    register_source(src)
    return src


def resolve_imports(root: SourceFile, root_path: str | None, rep: Reporter) -> Unit:
    unit = Unit()
    register_source(root)
    done: set[str] = set()
    stack: list[str] = []
    key_root = os.path.realpath(root_path) if root_path else root.path

    def visit(src: SourceFile, key: str, real_path: str | None) -> None:
        stack.append(key)
        module, diags = parse(src)
        rep.diagnostics.extend(diags)
        unit.sources[src.path] = src
        if module is not None:
            unit.modules.append(module)
            for decl in module.decls:
                if isinstance(decl, A.ImportDecl):
                    visit_import(decl, real_path or src.path)
        stack.pop()
        done.add(key)

    def visit_import(decl: A.ImportDecl, importer: str) -> None:
        target = _locate(importer, decl.path)
        key = os.path.realpath(target)
        if key in stack:
            chain = " -> ".join(display_path(k) for k in stack[stack.index(key):] + [key])
            rep.error("E101", f"import cycle: {chain}", decl.span,
                      "move the shared declarations into a third file that both import")
            return
        if key in done:
            return
        if not os.path.isfile(target):
            hint = ("the standard library has: " + ", ".join(sorted(
                "std/" + f for f in os.listdir(stdlib_dir()) if f.endswith(".netp"))))\
                if decl.path.startswith("std/") else "paths are relative to the importing file"
            rep.error("E102", f"cannot import \"{decl.path}\": no such file ({display_path(target)})",
                      decl.span, hint)
            return
        try:
            src = read_source(target)
        except OSError as exc:
            rep.error("E102", f"cannot import \"{decl.path}\": {exc.strerror}", decl.span)
            return
        visit(src, key, target)

    visit(root, key_root, root_path)
    return unit


