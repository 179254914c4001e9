"""Precompute: planning, resuming after kill -9, local workers vs Ray, concurrent runs, sprites, store commands."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import blocklens as bl
from blocklens.cli import main
from blocklens.errors import BlocklensError
from blocklens.iconcache import icon_key_for
from blocklens.recipes import recipe_for
from blocklens.optvis.targets import channel_target, logit_target, neuron_target
from blocklens.precompute import parse_units, plan, precompute
from blocklens.store import IconStore

TINY = dict(size=32, steps=4)


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOCKLENS_CACHE", str(tmp_path / "default-cache"))


def _mem() -> str:
    return f"memory://precompute-test-{uuid.uuid4().hex}"


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "blocklens", "precompute", *args, "--json", "--no-progress"]


# -------------------------------------------------------------------------------------------- plan


def test_parse_units():
    assert parse_units(None, 3) == [0, 1, 2] and parse_units("all", 3) == [0, 1, 2]
    assert parse_units("0-2,5, 3", 8) == [0, 1, 2, 5, 3]
    assert parse_units(["4", "1-2", "2"], 8) == [4, 1, 2]
    assert parse_units("3@7,7,1", 8) == [(3, 7, 7), 1]
    for bad, msg in [("8", "out of range"), ("2-1", "empty"), ("x", "cannot read"), ("", "empty"),
                     ("1-9", "out of range")]:
        with pytest.raises(BlocklensError, match=msg):
            parse_units(bad, 8)
    with pytest.raises(BlocklensError, match="neuron"):
        parse_units("3@1,1", 8, "class", neurons=False)


def test_plan_keys_are_the_icon_keys(lite0):
    recipe = recipe_for(**TINY)
    units = plan(lite0, ["blocks.3"], "0-2,1,4@3,3", logits="282", recipe=recipe)
    want = [channel_target(lite0, "blocks.3", c) for c in range(3)] + [neuron_target(lite0, "blocks.3", 4, 3, 3),
                                                                     logit_target(lite0, 282)]
    assert [u.key for u in units] == [icon_key_for(lite0, t, recipe) for t in want]
    assert [u.group for u in units] == ["blocks.3"] * 3 + [None, "logit"]
    assert [u.spec for u in units][-2:] == ["blocks.3:4@3,3", "logit:282"]
    assert {u.layer for u in plan(lite0, recipe=recipe)} == {"blocks.7", "blocks.11"}  # the report's layers
    assert {u.group for u in plan(lite0, logits="0-1", recipe=recipe)} == {"logit"}  # only what was asked
    with pytest.raises(BlocklensError, match="40 channels|out of range"):
        plan(lite0, ["blocks.3"], "40")


# ------------------------------------------------------------------------------------------ in process


def test_precompute_in_process_resumes_and_writes_sprites(lite0):
    store = IconStore(_mem())
    kw = dict(store=store, workers=0, batch=3, progress=False, **TINY)
    s = precompute(lite0, ["blocks.3", "blocks.5"], "0-4", **kw)
    assert (s["planned"], s["present"], s["rendered"], s["failed"], s["batches"]) == (10, 0, 10, 0, 4)
    assert s["layers"]["blocks.3"]["rendered"] == 5 and s["units_per_minute"] > 0 and s["backend"] == "inline"
    assert len(store) == 10 and store.verify() == {"ok": 10, "corrupt": []}
    for layer in ("blocks.3", "blocks.5"):
        sheet, index = store.sprite(lite0.fingerprint, layer, s["recipe"])
        assert index["count"] == 5 and index["total"] == lite0.layer(layer).channels and not index["complete"]
        assert index["columns"] == 3 and index["icon_size"] == [32, 32] and sheet.size == (96, 64)
        assert [u["index"] for u in index["units"]] == list(range(5))
        arr = np.asarray(sheet)
        for u in index["units"]:
            icon = store.get(u["key"])
            assert icon.meta["run"] == s["run"] and u["dead"] == icon.meta["dead"]
            np.testing.assert_array_equal(arr[u["y"]:u["y"] + 32, u["x"]:u["x"] + 32], icon.image)
    icons = bl.icons(lite0, "blocks.3", range(5), store=store, progress=False, **TINY)  # what the report asks
    _, index = store.sprite(lite0.fingerprint, "blocks.3", s["recipe"])
    assert [i.key for i in icons] == [u["key"] for u in index["units"]]

    again = precompute(lite0, ["blocks.3", "blocks.5"], "0-4", **kw)
    assert (again["present"], again["rendered"]) == (10, 0)
    more = precompute(lite0, ["blocks.3"], "0-6", **kw)
    assert (more["present"], more["rendered"], more["to_render"]) == (5, 2, 2)
    assert store.sprite(lite0.fingerprint, "blocks.3", s["recipe"])[1]["count"] == 7
    dry = precompute(lite0, ["blocks.3"], "all", dry_run=True, **kw)
    assert dry["to_render"] == 40 - 7 and dry["rendered"] == 0 and len(store) == 12
    parts = [precompute(lite0, ["blocks.3"], "all", dry_run=True, shard=f"{i}/3", **kw) for i in range(3)]
    assert sum(p["planned"] for p in parts) == 40 and sum(p["to_render"] for p in parts) == 33
    with pytest.raises(BlocklensError, match="shard"):
        precompute(lite0, ["blocks.3"], shard="3/3", **kw)


def test_any_model_in_process_but_workers_need_a_zoo_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    model = bl.wrap(net, input_size=32, labels=["a", "b", "c"])
    store = IconStore(_mem())
    s = precompute(model, ["1"], store=store, workers=0, progress=False, **TINY)
    assert s["rendered"] == 4 and store.sprite(model.fingerprint, "1", s["recipe"])[1]["count"] == 4
    with pytest.raises(BlocklensError, match="not a zoo model nor loaded from a spec"):
        precompute(model, ["1"], store=store, workers=1, **TINY)


def test_local_workers_rebuild_a_spec_model_from_its_spec(user_pkg, tmp_path, monkeypatch):
    """``precompute("mypkg.nets:build", weights=...)`` with a local worker: the worker gets the spec string and
    the weights path (no pickled module), rebuilds the model and its weights match the plan's fingerprint;
    a Model from bl.load_model goes to workers by its spec too."""
    import blocklens.jobs.backends as jobs_mod

    ref = bl.load_model("mypkg.nets:build")
    torch.save({k: torch.randn_like(v) for k, v in ref.module.state_dict().items()}, tmp_path / "w.pth")
    model = bl.load_model("mypkg.nets:build", weights=tmp_path / "w.pth")
    sent = []
    run_local = jobs_mod.run_local

    def spy(jobs, *a, **k):
        sent.extend(jobs)
        return run_local(jobs, *a, **k)

    monkeypatch.setattr(jobs_mod, "run_local", spy)
    store = IconStore(tmp_path / "store")
    s = precompute("mypkg.nets:build", ["2"], "0-3", store=store, workers=1, threads=1, batch=4, progress=False,
                   weights=str(tmp_path / "w.pth"), **TINY)
    assert (s["rendered"], s["failed"], s["errors"]) == (4, 0, []) and s["fingerprint"] == model.fingerprint
    assert [(j.worker.model, j.worker.weights, j.worker.loader) for j in sent] == [("mypkg.nets:build", str(tmp_path / "w.pth"), None)]
    assert {store.get(k).meta["fingerprint"] for k in store.keys()} == {model.fingerprint}
    assert store.sprite(model.fingerprint, "2", s["recipe"])[1]["count"] == 4
    sent.clear()
    again = precompute(model, ["2"], "0-5", store=store, workers=1, threads=1, progress=False, **TINY)
    assert (again["present"], again["rendered"], again["failed"]) == (4, 2, 0)
    assert [(j.worker.model, j.worker.weights) for j in sent] == [("mypkg.nets:build", str(tmp_path / "w.pth"))]


# ------------------------------------------------------------------------------------- kill -9, resume


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kill -9 and /proc")
def test_kill_9_mid_run_then_resume_renders_exactly_the_missing(tmp_path):
    """A real run (main process + one worker process) is killed with SIGKILL mid-way, then started again."""
    n = 16
    root = tmp_path / "store"
    args = _cli("--layers", "blocks.3", "--units", f"0-{n - 1}", "--size", "32", "--steps", "24", "--batch", "1",
                "--workers", "1", "--threads", "1", "--store", str(root))
    store = IconStore(root)
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), start_new_session=True)
    try:
        deadline = time.time() + 180
        while len(store) < 3:
            assert p.poll() is None, p.communicate()[1][-3000:]
            assert time.time() < deadline, "no icon after 180 s"
            time.sleep(0.005)
        workers = [c for c in _children(p.pid) if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()]
        os.kill(p.pid, signal.SIGKILL)  # kill -9 of the run's main process only
        p.wait(10)
        after_kill = set(store.keys())
        time.sleep(1.5)  # an orphaned worker would finish its batch and write within this
        assert set(store.keys()) == after_kill, "a worker kept writing after its run was killed"
        assert workers and not any(_running(w) for w in workers), "the worker outlived its run"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.stdout.close()
        p.stderr.close()
    assert 3 <= len(after_kill) < n, "the kill did not land mid-run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.verify(quarantine=False) == {"ok": len(after_kill), "corrupt": []}

    resumed = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    s = json.loads(resumed.stdout)
    assert (s["planned"], s["present"]) == (n, len(after_kill))
    assert s["rendered"] == n - len(after_kill) and s["skipped"] == 0 and s["failed"] == 0
    assert store.verify() == {"ok": n, "corrupt": []}
    runs = {k: store.get(k).meta["run"] for k in store.keys()}
    assert Counter(runs.values())[s["run"]] == n - len(after_kill)  # each missing icon rendered once, by the resume
    assert {k for k, r in runs.items() if r != s["run"]} == after_kill  # the killed run's icons were kept as they were
    assert len(set(runs.values())) == 2
    fingerprint = bl.load_model().fingerprint
    assert store.sprite(fingerprint, "blocks.3", s["recipe"])[1]["count"] == n


# -------------------------------------------------------------------------------- local workers vs Ray


def test_local_workers_and_ray_store_the_same_entries(tmp_path):
    ray = pytest.importorskip("ray")
    kw = dict(layers=["blocks.3", "blocks.5"], units="0-2", batch=2, threads=1, progress=False, **TINY)
    local = IconStore(_mem())  # a memory:// store lives in one process: workers send icons back to be written
    s_local = precompute("efficientnet_lite0", store=local, workers=2, **kw)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        on_ray = IconStore(tmp_path / "ray")  # a shared folder: Ray workers write to it themselves
        s_ray = precompute("efficientnet_lite0", store=on_ray, ray="auto", **kw)
    finally:
        ray.shutdown()
    assert s_local["backend"] == "local" and s_ray["backend"] == "ray"
    for s in (s_local, s_ray):
        assert (s["planned"], s["rendered"], s["failed"]) == (6, 6, 0), s["errors"]
    assert set(local.keys()) == set(on_ray.keys()) and len(local) == 6
    assert on_ray.verify() == {"ok": 6, "corrupt": []}
    fp = s_ray["fingerprint"]
    for layer in ("blocks.3", "blocks.5"):
        a, b = local.sprite(fp, layer, s_local["recipe"])[1], on_ray.sprite(fp, layer, s_ray["recipe"])[1]
        assert [u["key"] for u in a["units"]] == [u["key"] for u in b["units"]]
    assert {on_ray.get(k).meta["run"] for k in on_ray.keys()} == {s_ray["run"]}


# ------------------------------------------------------------------------------------ concurrent runs


def test_two_runs_at_once_on_one_store(tmp_path):
    root = tmp_path / "shared"
    args = _cli("--layers", "blocks.3", "--units", "0-7", "--size", "32", "--steps", "8", "--batch", "2",
                "--workers", "0", "--store", str(root))
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    summaries = [json.loads(o) for o, _ in outs]
    for s in summaries:
        assert s["present"] + s["rendered"] + s["skipped"] == 8 and s["failed"] == 0
    store = IconStore(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.verify() == {"ok": 8, "corrupt": []}
    assert not list(root.rglob(".tmp-*"))
    _, index = store.sprite(summaries[0]["fingerprint"], "blocks.3", summaries[0]["recipe"])
    assert index["count"] == 8 and [u["index"] for u in index["units"]] == list(range(8))


# ------------------------------------------------------------------------------------ command line


def test_cli_precompute_and_store_commands(tmp_path, capsys):
    store = str(tmp_path / "cli-store")
    common = ["--store", store, "--size", "32", "--steps", "4"]
    assert main(["precompute", "--layers", "blocks.3", "--units", "0-3", "--logits", "1,2", "--workers", "0",
                 "--batch", "4", "--json", "--no-progress", *common]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["planned"], s["rendered"]) == (6, 6) and set(s["sprites"]) == {"blocks.3", "logit"}

    assert main(["store", "info", "--store", store, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 6 and {sp["layer"] for sp in info["sprites"]} == {"blocks.3", "logit"}
    assert main(["store", "info", "--store", store]) == 0
    assert "6 icons" in capsys.readouterr().out

    out = tmp_path / "export"
    assert main(["store", "export", "--layer", "blocks.3", "--out", str(out), "--store", store, "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["count"] == 4 and exported["total"] == 40
    index = json.loads((out / "index.json").read_text())
    assert [u["file"] for u in index["units"]] == [f"channel-{c:04d}.png" for c in range(4)]
    assert all((out / u["file"]).is_file() for u in index["units"]) and index["recipe"] == s["recipe"]
    assert main(["store", "export", "--layer", "logit", "--out", str(tmp_path / "cls"), "--store", store]) == 0
    assert "2 of 1000" in capsys.readouterr().out
    assert main(["store", "export", "--layer", "blocks.5", "--out", str(tmp_path / "x"), "--store", store]) == 2
    assert "no icon of blocks.5" in capsys.readouterr().err

    assert main(["store", "verify", "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] == 6
    victim = IconStore(store).path_for(index["units"][1]["key"])
    victim.write_bytes(victim.read_bytes()[:50])
    assert main(["store", "verify", "--store", store, "--clean-temp", "0", "--json"]) == 1
    v = json.loads(capsys.readouterr().out)
    assert v["corrupt"] == [index["units"][1]["key"]] and v["quarantined"] and v["temp_removed"] == 0
    assert main(["precompute", "--layers", "blocks.3", "--units", "0-3", "--workers", "0", "--json",
                 "--no-progress", *common]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["present"], again["rendered"]) == (3, 1)  # the quarantined one, rendered again

    assert main(["precompute", "--layers", "blocks.3", "--units", "99", *common]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["precompute", "--layers", "nope", *common]) == 2
    assert main(["store", "info", "--store", "memory://x", "--storage-options", "[1]"]) == 2


@pytest.mark.parametrize("argv", [["precompute", "--help"], ["store", "info", "--help"], ["store", "verify", "--help"],
                                  ["store", "export", "--help"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "example" in capsys.readouterr().out
