"""The package's layout: every module imports only its own floor or floors below it, with no cycle between files
(imports inside functions included: a lazy import that hides a cycle is still a cycle), no private name taken from
another file, and a docstring that says what the module owns. The floors are the README's "How the code is laid out"."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "blocklens"

#: Bottom to top: the way the data flows. A module's floor is that of the longest prefix listed.
FLOORS: list[tuple[str, ...]] = [
    ("blocklens.errors", "blocklens.images", "blocklens.sheet", "blocklens.version"),   # base
    ("blocklens.store",),                                                                # storage
    ("blocklens.probe", "blocklens.models"),                                             # the model and its layers
    ("blocklens.analyses",),                                                             # numbers only
    ("blocklens.optvis",),                                                               # feature visualization
    ("blocklens.recipes", "blocklens.iconcache", "blocklens.quality", "blocklens.blocks"),  # icons
    ("blocklens.web",),                                                                  # the page and its documents
    ("blocklens.jobs",),                                                                 # workers
    ("blocklens.precompute", "blocklens.dataset"),                                       # over many images
    ("blocklens.explain",),                                                              # one image, every block
    ("blocklens.app", "blocklens.cli"),                                                  # the app and the command line
    ("blocklens", "blocklens.__main__"),                                                 # the public API
]


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _resolve(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _owner(name: str) -> str:
    """The module file that defines ``name`` (a module path or a name inside one)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str) -> list[tuple[str, str | None, int]]:
    """``(target module, imported name or None, line)`` for every import of the package in ``module``'s file,
    at any depth (module level, functions, methods, conditionals)."""
    path, is_pkg = MODULES[module]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(_owner(a.name), None, node.lineno) for a in node.names if a.name.split(".")[0] == "blocklens"]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_pkg, node.level, node.module) if node.level else (node.module or "")
            if source.split(".")[0] != "blocklens":
                continue
            for a in node.names:
                full = f"{source}.{a.name}"
                if full in MODULES:  # a submodule: `from . import grid`
                    found.append((full, None, node.lineno))
                else:
                    found.append((_owner(source), a.name, node.lineno))
    return [(t, n, line) for t, n, line in found if t != module]


def floor_of(module: str) -> int:
    best, floor = -1, None
    for i, names in enumerate(FLOORS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), i
    assert floor is not None, f"{module} is on no floor: add it to FLOORS (and to the README's layout)"
    return floor


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_lazy_imports_and_cycles():
    """The checks can fail: a function-level import is an edge, and a two-module loop is a cycle."""
    assert any(t == "blocklens.models.zoo" for t, _, _ in imports_of("blocklens.models.spec"))  # inside a function
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert floor_of("blocklens.analyses.groups") < floor_of("blocklens.explain") < floor_of("blocklens.cli.store")


def test_no_import_cycle_between_files():
    graph = {m: {t for t, _, _ in imports_of(m) if t in MODULES} for m in MODULES}
    assert _cycles(graph) == []


def test_no_private_name_taken_from_another_file():
    taken = [f"{m}:{line} imports {n} from {t}" for m in MODULES for t, n, line in imports_of(m)
             if n and n.startswith("_") and not n.startswith("__")]
    assert taken == []


def test_every_import_goes_to_the_same_floor_or_below():
    upward = [f"{m} (floor {floor_of(m)}):{line} imports {t} (floor {floor_of(t)})"
              for m in MODULES for t, _, line in imports_of(m) if t in MODULES and floor_of(t) > floor_of(m)]
    assert upward == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_owns(module):
    path, _ = MODULES[module]
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and len(doc.splitlines()[0]) > 20, f"{path} needs a docstring whose first line says what it owns"
