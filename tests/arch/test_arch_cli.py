"""The command line with --model module:callable on a user's package building a torchvision model."""
import os
import subprocess
import sys
import textwrap

import pytest

import blocklens as bl

pytestmark = pytest.mark.arch


@pytest.mark.timeout(600)
def test_cli_explain_with_module_callable(tmp_path, timing):
    """The report for a user's ResNet-50 (numbers and views; --cached-only: rendering its ~230 quick icons on 2
    CPU cores would take many minutes; tests/arch/test_arch_render.py renders on every architecture)."""
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
           "--preset", "quick", "--out", "r.html", "--quiet", "--cached-only"]
    with timing("resnet50 (CLI)", "cli"):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = tmp_path / "r.html"
    assert report.exists() and report.stat().st_size > 10_000
