"""tests/arch: blocklens on real torchvision / timm architectures (randomly initialised, nothing downloaded).

Run with ``./dev test-arch`` (``.venv-arch``: torch 2.14.1, torchvision 0.29.1, timm). The default suite
(``./dev test``, whose marker expression is ``not slow and not arch``) does not collect this folder at all; run
with ``-m arch`` in an environment without a working torchvision or timm (the main ``.venv``: torchvision does
not import beside torch 2.13.0+cpu), every module here is skipped with the import error as the reason.
"""
from __future__ import annotations

import time

import pytest

from .archspecs import MODELS, wrapped

_REASON: list = []


def skip_reason() -> str | None:
    """Why this folder cannot run here (torchvision or timm does not import), or None. Imported only when a module
    here is collected, never by the default suite: a failing torchvision import leaves half-registered operators."""
    if not _REASON:
        try:
            import timm  # noqa: F401
            import torchvision  # noqa: F401

            _REASON.append(None)
        except Exception as e:  # ImportError, or RuntimeError 'operator torchvision::nms does not exist'
            _REASON.append(f"tests/arch needs torchvision and timm beside this torch ({type(e).__name__}: {e}); "
                           "run ./dev test-arch (.venv-arch)")
    return _REASON[0]


def _arch_selected(config) -> bool:
    """Whether the -m expression selects tests marked arch (no expression: yes)."""
    expr = config.getoption("markexpr", "") or ""
    if not expr.strip():
        return True
    try:
        from _pytest.mark.expression import Expression

        return bool(Expression.compile(expr).evaluate(lambda name, **kw: name == "arch"))
    except Exception:  # a private API; when in doubt collect, the marks still deselect
        return True


def pytest_ignore_collect(collection_path, config):
    # the default suite deselects arch: do not even import these modules (or torchvision) there
    if not _arch_selected(config):
        return True
    return None


class _SkippedModule(pytest.Module):
    def collect(self):
        pytest.skip(skip_reason())


def pytest_pycollect_makemodule(module_path, parent):
    if module_path.name.startswith("test_") and skip_reason():
        return _SkippedModule.from_parent(parent, path=module_path)
    return None


# -- timings for the summary: explain / render / CLI seconds per model --------------------------------------------
TIMINGS: dict[str, dict[str, float]] = {}


@pytest.fixture
def timing():
    """``with timing(model, what): ...`` records the block's wall time for the terminal summary."""
    from contextlib import contextmanager

    @contextmanager
    def record(model: str, what: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            TIMINGS.setdefault(model, {})[what] = time.perf_counter() - t
    return record


def pytest_terminal_summary(terminalreporter):
    if not TIMINGS:
        return
    whats = sorted({w for d in TIMINGS.values() for w in d})
    tr = terminalreporter
    tr.section("tests/arch timings (s)")
    tr.write_line("model".ljust(28) + "".join(w.rjust(12) for w in whats))
    for model, d in TIMINGS.items():
        tr.write_line(model.ljust(28) + "".join((f"{d[w]:.1f}" if w in d else "-").rjust(12) for w in whats))


# -- the models: each built once per session (archspecs.wrapped caches), handed to one test module at a time ------
@pytest.fixture(scope="module", params=MODELS)
def arch(request):
    """``(model id, bl.Model)`` for each architecture of archspecs.SPECS."""
    return request.param, wrapped(request.param)
