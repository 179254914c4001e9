"""The command line with --model module:callable on a user's package building a torchvision model."""
import os
import subprocess
import sys
import textwrap

import pytest

import blocklens as bl

pytestmark = pytest.mark.arch


@pytest.mark.timeout(1500)  # renders the quick preset's ~230 icons on resnet50
def test_cli_explain_with_module_callable(tmp_path, timing):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent("""\
        import torch
        import torchvision


        def build():
            torch.manual_seed(0)
            return torchvision.models.resnet50(weights=None)
        """))
    env = dict(os.environ, BLOCKLENS_CACHE=str(tmp_path / "cache"))
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "blocklens", "explain", str(bl.bundled_image("dog")), "--model", "mypkg.nets:build",
           "--preset", "quick", "--out", "r.html", "--quiet"]
    with timing("resnet50 (CLI)", "cli"):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = tmp_path / "r.html"
    assert report.exists() and report.stat().st_size > 10_000
