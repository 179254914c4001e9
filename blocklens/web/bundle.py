"""The front end's ES modules as one classic script, for pages that cannot load modules by URL (a report opened
from file://, a notebook output).

The modules in ``static/`` follow a convention this bundler checks: imports are single lines
``import { a, b } from "./x.js";``, exports are ``export function|class|const|let``, and top-level names are
unique across modules. The bundle is the modules in dependency order with those lines and keywords removed,
inside one function scope. No build step: the app serves the same files as modules.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..errors import BlocklensError

STATIC = Path(__file__).with_name("static")
_IMPORT = re.compile(r'^import \{([^}]*)\} from "\./([\w-]+\.js)";\s*$')
_TOP = re.compile(r"^(?:export )?(?:async )?(?:function\*?|class|const|let|var) ([A-Za-z_$][\w$]*)", re.M)


def _parse(name: str) -> tuple[list[str], str]:
    deps, body = [], []
    for n, line in enumerate((STATIC / name).read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("import "):
            m = _IMPORT.match(line)
            if not m:
                raise BlocklensError(f"static/{name}:{n}: imports must read `import {{ a, b }} from \"./x.js\";`")
            deps.append(m.group(2))
            continue
        if line.startswith("export default") or line.startswith("export {"):
            raise BlocklensError(f"static/{name}:{n}: use `export function|class|const`, not {line.split()[1]}")
        body.append(line[len("export "):] if line.startswith("export ") else line)
    return deps, "\n".join(body)


@lru_cache(maxsize=8)
def bundle(entry: str = "report.js") -> str:
    """The modules ``entry`` needs, dependencies first, as one script (a function scope, no globals but the
    entry's exports, which are put on ``window.blocklens``)."""
    order: list[str] = []
    bodies: dict[str, str] = {}

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in stack:
            raise BlocklensError(f"import cycle: {' -> '.join(stack + (name,))}")
        if not (STATIC / name).is_file():
            raise BlocklensError(f"static/{stack[-1] if stack else '?'} imports missing module {name}")
        deps, body = _parse(name)
        for d in deps:
            visit(d, stack + (name,))
        order.append(name)
        bodies[name] = body

    visit(entry, ())
    seen: dict[str, str] = {}
    for name in order:
        for top in _TOP.findall(bodies[name]):
            if top in seen:
                raise BlocklensError(f"top-level name {top!r} is defined in both static/{seen[top]} and static/{name}")
            seen[top] = name
    exports = _TOP.findall("\n".join(l for l in (STATIC / entry).read_text().splitlines() if l.startswith("export ")))
    parts = [f"// ---- {name}\n{bodies[name]}" for name in order]
    return ("(function () {\n\"use strict\";\n" + "\n".join(parts)
            + f"\nwindow.blocklens = Object.assign(window.blocklens || {{}}, {{ {', '.join(exports)} }});\n}})();\n")


def stylesheet() -> str:
    return (STATIC / "style.css").read_text(encoding="utf-8")
