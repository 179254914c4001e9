"""The app's own pieces (blocklens.app): the bounded LRU every cache is, the job registry's one pruning rule, the
render job's progress and announced icons, a concepts job whose progress is class_concepts' on_progress, and the
saved concept dictionaries' listing and documents."""
import inspect
import queue
import shutil
import threading
import time
from types import SimpleNamespace

import pytest

import blocklens as bl
from blocklens.app import LRU, BlocklensApp, JobRegistry, RenderJob, create_app
from blocklens.jobs import Progress


def test_lru_forgets_the_least_recently_used_beyond_its_size():
    cache = LRU(3)
    for k in "abc":
        cache.put(k, k.upper())
    assert cache.get("a") == "A"  # a is now the most recent: b is the oldest
    cache.put("d", "D")
    assert cache.keys() == ["c", "a", "d"] and "b" not in cache and cache.get("b") is None
    cache.put("c", "C2")  # putting again makes it recent, and holds the new value
    cache.put("e", "E")
    assert cache.keys() == ["d", "c", "e"] and len(cache) == 3 and cache.get("c") == "C2"
    with pytest.raises(ValueError):
        LRU(0)


def test_every_cache_of_the_app_is_bounded(tmp_path):
    state = BlocklensApp(store=tmp_path / "store", max_explanations=5)
    try:
        assert set(state.caches) == {"explanations", "indexes", "atlases", "concepts", "dictionaries"}
        assert all(isinstance(c, LRU) for c in state.caches.values())
        assert state.caches["explanations"].maxsize == 5
        assert state.explanations.held is state.caches["explanations"]
        assert state.datasets.held_concepts is state.caches["concepts"]
        assert state.dictionaries.held is state.caches["dictionaries"]
    finally:
        state.close()


def job(ident, state, started):
    return SimpleNamespace(id=ident, state=state, started=started)


def test_the_registry_forgets_finished_jobs_beyond_its_bound_oldest_first_and_keeps_running_ones():
    reg = JobRegistry(bound=3)
    made = []

    def add(subject, state, started):
        got, new = reg.start(subject, lambda i: job(i, state, started))
        assert new
        made.append(got)
        return got

    old_done = add("a", "done", 1)
    running = add("b", "running", 0)  # the oldest of all, but running
    old_error = add("c", "error", 2)
    assert len(reg) == 3
    newer = add("d", "done", 3)  # four jobs: the oldest finished one goes
    assert old_done.id not in reg and running.id in reg and old_error.id in reg and newer.id in reg
    add("e", "queued", 4)
    add("f", "running", 5)  # only finished jobs are forgotten: the rest stays, over the bound if need be
    assert old_error.id not in reg and newer.id not in reg
    assert {j.id for j in made if j.id in reg} == {made[1].id, made[4].id, made[5].id}
    assert reg.latest("a") is None  # a forgotten job's subject forgets it too
    with pytest.raises(Exception, match="no job"):
        reg.get(old_done.id)


def test_one_active_job_per_subject():
    reg = JobRegistry()
    first, new = reg.start("x", lambda i: job(i, "running", 0))
    again, new2 = reg.start("x", lambda i: job(i, "queued", 1))
    assert new and not new2 and again is first and reg.active("x") is first and reg.running() == 1
    first.state = "error"
    retry, new3 = reg.start("x", lambda i: job(i, "queued", 2))
    assert new3 and retry is not first and reg.latest("x") is retry


def test_a_render_job_reports_finish_progress_and_each_icon_once():
    j = RenderJob("0" * 20, "1" * 20, keys=["k1", "k2", "k3", "k4"], grids=["blocks.7"])
    seen = [j.fraction()]
    j.on_progress("icons", 0, 3)
    j.landed(["k2"])  # already in the store
    j.on_progress("icons", 3, 3)
    j.landed(["k1", "k2", "k3"])
    seen.append(j.fraction())
    st = j.status(0)
    assert st["ready"] == ["k2", "k1", "k3"] and st["ready_upto"] == 3 and j.waiting() == ["k4"]
    assert j.status(st["ready_upto"])["ready"] == []
    j.on_progress("grid blocks.7", 1, 2)
    seen.append(j.fraction())
    j.state = "done"
    seen.append(j.fraction())
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 1.0
    assert seen[1] == pytest.approx(4 / 20) and seen[2] == pytest.approx((4 + 8) / 20)


def test_a_concepts_job_shows_the_progress_class_concepts_reports(lite0, tmp_path, monkeypatch):
    """The job's stage, done and total are the Progress values class_concepts gives its on_progress, as they
    come; the fraction rises with them; the finished document is then served."""
    from fastapi.testclient import TestClient

    import blocklens.app.datasets as datasets_mod
    from blocklens.images import bundled_images

    photos = bundled_images()
    for label, name in (("malamute", "dog"), ("tabby", "chelsea")):
        (tmp_path / "photos" / label).mkdir(parents=True)
        shutil.copy(photos[name], tmp_path / "photos" / label / photos[name].name)
    store = bl.IconStore(tmp_path / "store")
    idx = bl.build_index(tmp_path / "photos", lite0, ["blocks.11"], store=store, k=2, samples=2, classes=0,
                         progress=False)
    steps = [Progress("scan", 0, 2), Progress("scan", 1, 2), Progress("scan", 2, 2), Progress("factorize", 0, 0),
             Progress("measure", 1, 2), Progress("icons", 2, 4), Progress("vocabulary icons", 8, 16)]
    told, go = queue.Queue(), threading.Event()

    real = inspect.signature(datasets_mod.class_concepts)

    def fake_class_concepts(*, on_progress, log, **kw):
        real.bind(on_progress=on_progress, log=log, **kw)  # called as the real one takes it
        assert kw["cls"] == lite0.class_index("malamute") and kw["vs"] == lite0.class_index("tabby")
        log("scanning")
        for p in steps:
            go.clear()
            on_progress(p)
            told.put(p)
            assert go.wait(30)
        return SimpleNamespace(to_json=lambda images: {"concepts": [], "label": "malamute"}, timings={"total": 1.0})

    monkeypatch.setattr(datasets_mod, "class_concepts", fake_class_concepts)
    state = BlocklensApp(store=store, render=False)
    state._models[(lite0.name, "concepts")] = lite0
    with TestClient(create_app(state)) as client:
        got = client.post("/api/concepts", params={"index": idx.key, "class": "malamute", "vs": "tabby"}).json()
        assert got["job"] and got["state"] in ("queued", "running")
        fractions = []
        for p in steps:
            assert told.get(timeout=30) == p
            st = client.get(f"/api/jobs/{got['job']}").json()
            assert (st["stage"], st["done"], st["total"]) == (p.phase, p.done, p.total)
            assert st["state"] == "running" and st["message"] == "scanning"
            fractions.append(st["fraction"])
            assert client.get(f"/api/concepts/{got['id']}").status_code == 409  # still being computed
            go.set()
        assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] < 1
        deadline = time.time() + 30
        while (st := client.get(f"/api/jobs/{got['job']}").json())["state"] != "done":
            assert time.time() < deadline and st["state"] != "error", st
            time.sleep(0.05)
        assert st["fraction"] == 1.0 and st["message"] == ""
        doc = client.get(f"/api/concepts/{got['id']}").json()
        assert doc == {"concepts": [], "label": "malamute", "id": got["id"], "timings": {"total": 1.0}}
        again = client.post("/api/concepts", params={"index": idx.key, "class": "malamute", "vs": "tabby"}).json()
        assert again == {"id": got["id"], "job": None, "state": "done"}  # held: no second job


def test_saved_dictionaries_are_listed_and_served_with_their_pictures_and_a_bad_key_is_a_clear_404(lite0,
                                                                                                  small_dictionary):
    from fastapi.testclient import TestClient

    d = small_dictionary.result
    state = BlocklensApp(store=small_dictionary.store, render=False)
    state._models[(lite0.name, "analysis")] = lite0
    with TestClient(create_app(state)) as client:
        listed = client.get("/api/dictionaries").json()
        assert [x["key"] for x in listed] == [d.key]
        assert listed[0]["layer"] == d.layer and listed[0]["atoms"] == 6 and listed[0]["images"] == len(d.images)
        doc = client.get(f"/api/dictionaries/{d.key}").json()
        assert doc["kind"] == "dictionary" and doc["key"] == d.key and "note" not in doc
        assert [a["index"] for a in doc["atoms"]] == [a.index for a in d.atoms]
        assert all(doc["icons"][a.key].startswith("data:image/") for a in d.atoms)
        assert all(e["src"].startswith("data:image/") for a in doc["atoms"] for e in a["examples"])
        assert set(doc["crops"]) == set(small_dictionary.doc["crops"]) and doc["crops"]
        # the class search's drops: every class that moves by at least `least`, as the library measured them
        drops = doc["class_drops"]
        for a in d.atoms:
            row = drops["atoms"][str(a.index)]
            for c, v in row.items():
                assert abs(v - d.class_drops[a.index, int(c)]) < 1e-4 and abs(v) >= drops["least"]
                assert drops["labels"][c] == lite0.labels[int(c)]
            assert sum(abs(d.class_drops[a.index]) >= drops["least"]) == len(row)
        assert state.caches["dictionaries"].get(d.key) is not None  # held: the next ask reads no folder

        missing = client.get("/api/dictionaries/0123456789abcdef")
        assert missing.status_code == 404
        assert missing.json()["error"] == f"no dictionary 0123456789abcdef in the store; it holds {d.key}"
        for bad in ("not-a-key", "ABCDEF0123456789", d.key + "0"):
            got = client.get(f"/api/dictionaries/{bad}")
            assert got.status_code == 404 and "16-hex key" in got.json()["error"], (bad, got.text)


def test_a_dictionary_whose_folder_is_gone_is_served_without_pictures_and_says_why(lite0, small_dictionary,
                                                                                   tmp_path):
    from fastapi.testclient import TestClient

    d = small_dictionary.result
    store = tmp_path / "store"
    shutil.copytree(small_dictionary.store.root, store)
    manifest = store / "dictionaries" / d.key / "manifest.json"
    manifest.write_text(manifest.read_text().replace(str(small_dictionary.root), str(tmp_path / "gone")))
    state = BlocklensApp(store=store, render=False)
    state._models[(lite0.name, "analysis")] = lite0
    with TestClient(create_app(state)) as client:
        doc = client.get(f"/api/dictionaries/{d.key}").json()
    assert doc["crops"] == {} and not any("src" in e for a in doc["atoms"] for e in a["examples"])
    assert "patches are missing: their images are not in" in doc["note"]
    assert [a["drives"][0]["label"] for a in doc["atoms"]] == [a.drives[0].label for a in d.atoms]
