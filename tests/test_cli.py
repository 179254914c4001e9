"""The command line: JSON contract, exit codes, errors without tracebacks."""
import json
import subprocess
import sys

import pytest

from blocklens.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_json_contract(capsys):
    code, out, err = run(capsys, "classify", "chelsea", "--top", "3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["model"] == "efficientnet_lite0"
    first = data["predictions"][0]
    assert set(first) == {"index", "label", "prob"}
    assert (first["index"], first["label"]) == (282, "tiger cat") and abs(first["prob"] - 0.386) < 0.01
    assert len(data["predictions"]) == 3


def test_classify_several_images_keeps_good_results(capsys, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    code, out, err = run(capsys, "classify", "coffee", str(bad), "collies", "--json", "--top", "1")
    assert code == 2
    assert "bad.jpg" in err and "not an image" in err
    data = json.loads(out)
    assert [d["predictions"][0]["label"] for d in data] == ["espresso", "Border collie"]


def test_layers_and_models(capsys):
    code, out, _ = run(capsys, "layers", "--grep", "blocks.9.expand.act", "--json")
    assert code == 0
    assert json.loads(out)["layers"][0]["shape"] == [672, 14, 14]
    code, out, _ = run(capsys, "models", "--json")
    assert "efficientnet_lite0" in [m["name"] for m in json.loads(out)["models"]]


@pytest.mark.parametrize("args, message", [
    (["classify", "missing.png"], "no such file"),
    (["layers", "--model", "resnet"], "unknown model"),
    (["layers", "--grep", "nothing-like-this"], "no layer"),
])
def test_errors_are_one_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("blocklens: error:")


def test_entry_point_help_and_bad_usage():
    exe = [sys.executable, "-m", "blocklens"]
    r = subprocess.run(exe + ["--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "classify" in r.stdout and "examples" in r.stdout
    r = subprocess.run(exe + ["classify", "--top", "0", "chelsea"], capture_output=True, text=True)
    assert r.returncode == 2 and "at least 1" in r.stderr
