"""``blocklens explain``: the report from the command line, warm from a store, and its errors."""
import re

import pytest

from blocklens import recipes
from blocklens.cli import main
from conftest import TINY_GRID, TINY_ICONS


@pytest.fixture
def tiny_quick(monkeypatch):
    # the quick preset shrunk to the tiny recipes the session's tiny explanation used (so its store is warm)
    monkeypatch.setitem(recipes.PRESETS, "quick", {"icons": TINY_ICONS, "grid": TINY_GRID,
                                                   "group_counts": recipes.PRESETS["quick"]["group_counts"]})


def test_explain_writes_a_report_from_a_warm_store(capsys, tiny_explanation, tiny_quick, tmp_path, monkeypatch):
    import blocklens.iconcache as ic

    monkeypatch.setattr(ic, "render", lambda *a, **k: pytest.fail("a warm explain must not render"))
    _, store = tiny_explanation
    out = tmp_path / "dog.html"
    code = main(["explain", "dog", "--store", str(store), "--out", str(out), "--quiet", "--folder", str(tmp_path / "f")])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "malamute" in stdout and f"report: {out}" in stdout
    text = out.read_text()
    assert text.startswith("<!doctype html>") and "blocklens-data" in text
    assert (tmp_path / "f" / "explanation.json").exists()


def test_explain_default_output_name(capsys, tiny_explanation, tiny_quick, tmp_path, monkeypatch):
    _, store = tiny_explanation
    monkeypatch.chdir(tmp_path)
    assert main(["explain", "dog", "--store", str(store), "-q"]) == 0
    assert (tmp_path / "dog.blocklens.html").exists()


@pytest.mark.parametrize("args, message", [
    (["explain", "nosuch.jpg"], "no file 'nosuch.jpg'"),
    (["explain", "dog", "--out", "report.pdf"], "ending in .html"),
    (["explain", "dog", "--layers", "fc", "-q"], "positions"),
    (["explain", "dog", "--classes", "tiger cat", "-q"], "at least two classes"),
    (["serve", "--port", "0"], "not a port number"),
    (["serve", "--model", "nosuchpkg.nets:build"], "no module named 'nosuchpkg'"),
    (["explain", "dog", "--model", "nosuchpkg.nets:build"], "no module named 'nosuchpkg'"),
])
def test_explain_and_serve_errors(capsys, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(args)
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("blocklens: error:") and re.search(re.escape(message), err), err


def test_explain_with_a_user_model_spec(capsys, tiny_quick, user_pkg, tmp_path):
    """``--model mypkg.nets:build``: a module from the current directory, its function returning a small conv
    classifier (10 classes, 64 px); the report is written and names it."""
    out = tmp_path / "r.html"
    code = main(["explain", "dog", "--model", "mypkg.nets:build", "--out", str(out), "--store", str(tmp_path / "s"),
                 "--groups", "3", "--quiet", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    import json

    data = json.loads(stdout.splitlines()[0])
    assert data["model"] == "mypkg.nets:build" and len(data["layers"]) >= 1
    assert all(p["label"].startswith("class ") for p in data["predictions"])
    text = out.read_text()
    assert text.startswith("<!doctype html>") and "mypkg.nets:build" in text


def test_explain_cached_only_renders_nothing(capsys, user_pkg, tmp_path, monkeypatch):
    """``--cached-only``: numbers and a report at once; every icon the store lacks stays not rendered."""
    import sys

    explain_mod = sys.modules["blocklens.explain"]  # the module (bl.explain is the function)

    def no_render(*a, **k):
        raise AssertionError("--cached-only rendered an icon")

    monkeypatch.setattr(explain_mod, "get_icons", no_render)
    out = tmp_path / "r.html"
    code = main(["explain", "dog", "--model", "mypkg.nets:build", "--out", str(out), "--store", str(tmp_path / "s"),
                 "--groups", "3", "--quiet", "--cached-only"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert out.exists() and "0 icons" in stdout
