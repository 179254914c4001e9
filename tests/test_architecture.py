"""The package's layout: every module imports only its own floor or floors below it, with no cycle between files
(imports inside functions included: a lazy import that hides a cycle is still a cycle), no private name taken from
another file, and a docstring that says what the module owns. The floors are the README's "How the code is laid out"."""
from __future__ import annotations

import ast
import textwrap
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


# --- functions a newcomer can read -----------------------------------------------------------------------------

#: The longest a function or method may be, from its ``def`` to its last line (``end_lineno - lineno + 1``).
MAX_FUNCTION_LINES = 80
#: Functions that may be longer, by (module, qualified name), with the reason. No literal-table function is over
#: the limit today; add one here (with its reason) rather than split a table.
LONG_FUNCTIONS_ALLOWED = {
    ("blocklens.cli.basic", "add_commands"): "argparse set-up: one add_parser / add_argument call per flag",
    ("blocklens.cli.dataset", "add_commands"): "argparse set-up: one add_parser / add_argument call per flag",
    ("blocklens.cli.interfaces", "add_commands"): "argparse set-up: one add_parser / add_argument call per flag",
    ("blocklens.cli.store", "add_commands"): "argparse set-up: one add_parser / add_argument call per flag",
}


def long_functions(source: str, most: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """``(qualified name, line, length)`` of every function or method in ``source`` longer than ``most`` lines,
    nested ones included (``Class.method``, ``outer.inner``)."""
    found = []

    def visit(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1
                if length > most:
                    found.append((prefix + child.name, child.lineno, length))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _functions(source: str) -> set[str]:
    return {name for name, _, _ in long_functions(source, most=0)}


def test_the_length_checker_catches_a_long_function():
    """81 lines is too long, 80 is not; methods and async functions count; a class is no function."""
    body = "".join(f"    x{i} = {i}\n" for i in range(79))          # 79 lines: with its def, a function of 80
    source = ("def short():\n" + body + "\n"
              "class K:\n"
              "    def long(self):\n" + textwrap.indent(body, "    ") + "        return 1\n"   # 81 lines
              "    def fine(self):\n        return 2\n")
    assert [(name, n) for name, _, n in long_functions(source)] == [("K.long", 81)]
    assert long_functions("async def f():\n" + body + "    return 0\n")[0][2] == 81
    assert long_functions("def f():\n" + body) == []
    assert _functions(source) == {"short", "K.long", "K.fine"}


def test_no_function_is_longer_than_80_lines():
    """Split a long function into named phases that can be tested alone (argparse set-up excepted, see
    LONG_FUNCTIONS_ALLOWED)."""
    sources = {m: path.read_text(encoding="utf-8") for m, (path, _) in MODULES.items()}
    stale = [f"{m} {name}" for m, name in LONG_FUNCTIONS_ALLOWED
             if m not in MODULES or name not in _functions(sources[m])]
    assert stale == [], f"LONG_FUNCTIONS_ALLOWED names functions that are gone: {stale}"
    long = [f"{MODULES[m][0].relative_to(PACKAGE.parent)}:{line} {name}: {n} lines"
            for m, src in sources.items() for name, line, n in long_functions(src)
            if (m, name) not in LONG_FUNCTIONS_ALLOWED]
    print("\n".join(long))
    assert long == [], (f"{len(long)} function(s) over {MAX_FUNCTION_LINES} lines; split each into named phases:\n"
                        + "\n".join(long))


# --- result dataclasses built by keyword -----------------------------------------------------------------------

#: The most positional arguments a call of a package dataclass may take: beyond it, name them.
MAX_POSITIONAL = 6


def _is_dataclass(node: ast.ClassDef) -> bool:
    for d in node.decorator_list:
        f = d.func if isinstance(d, ast.Call) else d
        if getattr(f, "id", None) == "dataclass" or getattr(f, "attr", None) == "dataclass":
            return True
    return False


def positional_dataclass_calls(sources: dict[str, tuple[str, bool]], most: int = MAX_POSITIONAL) -> list[str]:
    """``module:line Class: n positional arguments`` for every call of a package dataclass with more than ``most``
    positional arguments. ``sources``: module name -> (source, is_package). A call is found by the class's name:
    ``Name(...)`` where the name is defined in the module or imported from a package module (through re-exports,
    ``as`` included), ``module.Name(...)`` where ``module`` is an imported package module, and ``cls(...)`` in a
    classmethod of the dataclass."""
    trees = {m: (ast.parse(src), is_pkg) for m, (src, is_pkg) in sources.items()}
    defined = {m: {n.name for n in ast.walk(t) if isinstance(n, ast.ClassDef) and _is_dataclass(n)}
               for m, (t, _) in trees.items()}

    def owner(name: str) -> str:
        while name not in trees and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    imported: dict[str, dict[str, tuple[str, str]]] = {}  # module -> local name -> (module, name) it came from
    modules: dict[str, dict[str, str]] = {}               # module -> local name -> package module
    for m, (tree, is_pkg) in trees.items():
        imported[m], modules[m] = {}, {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(m, is_pkg, node.level, node.module) if node.level else (node.module or "")
                for a in node.names:
                    if f"{source}.{a.name}" in trees:
                        modules[m][a.asname or a.name] = f"{source}.{a.name}"
                    elif owner(source) in trees:
                        imported[m][a.asname or a.name] = (owner(source), a.name)
            elif isinstance(node, ast.Import):
                modules[m].update({a.asname: a.name for a in node.names if a.asname and a.name in trees})

    def dataclass_named(m: str, name: str, depth: int = 0) -> str | None:
        """The dataclass ``name`` means in module ``m`` (``module.Class``), following imports; None if none."""
        if name in defined[m]:
            return f"{m}.{name}"
        if name in imported[m] and depth < 10:
            return dataclass_named(*imported[m][name], depth + 1)
        return None

    found = []
    for m, (tree, _) in trees.items():
        calls = []  # (call, the dataclass it builds)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                calls.append((node, dataclass_named(m, node.func.id)))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and isinstance(node.func.value, ast.Name) and node.func.value.id in modules[m]):
                calls.append((node, dataclass_named(modules[m][node.func.value.id], node.func.attr)))
            elif isinstance(node, ast.ClassDef) and _is_dataclass(node):
                calls += [(c, f"{m}.{node.name}") for c in _cls_calls(node)]
        found += [(m, c.lineno, cls, len(c.args)) for c, cls in calls if cls is not None and len(c.args) > most]
    return [f"{m}:{line} {cls}: {n} positional arguments" for m, line, cls, n in sorted(set(found))]


def _cls_calls(node: ast.ClassDef) -> list[ast.Call]:
    """Calls of ``cls(...)`` (the first argument) in the class's classmethods."""
    out = []
    for f in node.body:
        if (isinstance(f, ast.FunctionDef) and f.args.args
                and any(getattr(d, "id", None) == "classmethod" for d in f.decorator_list)):
            first = f.args.args[0].arg
            out += [c for c in ast.walk(f) if isinstance(c, ast.Call) and getattr(c.func, "id", None) == first]
    return out


def test_the_constructor_checker_catches_seven_positional_arguments():
    sources = {
        "pkg": ("", True),
        "pkg.results": ("from dataclasses import dataclass, field\n\n"
                        "@dataclass\nclass Result:\n    a: int\n\n"
                        "    @classmethod\n    def make(cls):\n        return cls(1, 2, 3, 4, 5, 6, 7)\n\n"
                        "@dataclass(repr=False)\nclass Other:\n    a: int\n\n"
                        "class Plain:\n    pass\n\n"
                        "Plain(1, 2, 3, 4, 5, 6, 7)\nResult(1, 2, 3, 4, 5, 6)\n", False),
        "pkg.again": ("from .results import Result\n", False),   # a re-export
        "pkg.user": ("from .again import Result as R\nfrom . import results\nfrom .results import Other\n\n"
                     "def f():\n    R(1, 2, 3, 4, 5, 6, 7)\n    R(1, 2, 3, 4, 5, 6, g=7)\n"
                     "    results.Other(1, 2, 3, 4, 5, 6, 7)\n    Other(*range(9))\n", False),
    }
    assert positional_dataclass_calls(sources) == [
        "pkg.results:9 pkg.results.Result: 7 positional arguments",
        "pkg.user:6 pkg.results.Result: 7 positional arguments",
        "pkg.user:8 pkg.results.Other: 7 positional arguments",
    ]
    assert positional_dataclass_calls(sources, most=7) == []


def test_no_dataclass_is_built_with_more_than_6_positional_arguments():
    """A result with many fields is built by keyword, so that a new field cannot shift the others silently."""
    sources = {m: (path.read_text(encoding="utf-8"), is_pkg) for m, (path, is_pkg) in MODULES.items()}
    found = positional_dataclass_calls(sources)
    print("\n".join(found))
    assert found == [], (f"{len(found)} call(s) of a dataclass with more than {MAX_POSITIONAL} positional "
                         "arguments; name them:\n" + "\n".join(found))
