"""The web app over HTTP: answers, progress, load, and what it refuses (oversized, hostile or malformed input,
paths outside its folders). A live server in a thread (conftest ``live_server``)."""
import http.client
import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

import blocklens as bl
from blocklens.cli import build_parser


def post(url, path="/api/explain", content=None, **params):
    return httpx.post(url + path, params=params, content=content, timeout=120)


def wait_job(url, job, timeout=120):
    seen, since, t0 = [], 0, time.time()
    while time.time() - t0 < timeout:
        st = httpx.get(f"{url}/api/jobs/{job}", params={"since": since}).json()
        seen.append(st)
        since = st["ready_upto"]
        if st["state"] in ("done", "error"):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish in {timeout} s: {seen[-1]}")


def test_serve_binds_loopback_by_default():
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000


def test_bundled_cached_explanation(live_server):
    url = live_server.url
    assert httpx.get(url + "/api/health").json()["ok"]
    models = httpx.get(url + "/api/models").json()
    lite0 = next(m for m in models if m["name"] == "efficientnet_lite0")
    assert lite0["default_layers"] == ["blocks.7", "blocks.11"]
    assert all("layers" not in m for m in models if m["name"] != "efficientnet_lite0")  # loaded on demand
    lite1 = httpx.get(url + "/api/models/efficientnet_lite1", timeout=60).json()
    assert lite1["input_size"] == 240 and lite1["default_layers"] == ["blocks.10", "blocks.16"]
    assert {i["name"] for i in httpx.get(url + "/api/images").json()} >= {"dog", "chelsea"}
    r = post(url, image="dog")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["predictions"][0]["label"] == "malamute" and doc["job"] is None
    assert doc["icons"] and all(doc["icons"].values())  # every icon already in the store
    icon = httpx.get(f"{url}/{next(iter(doc['icons'].values()))}")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(icon.content)).size == (32, 32)
    photo = httpx.get(f"{url}/{doc['image']}")
    assert Image.open(io.BytesIO(photo.content)).size == (224, 224)
    report = httpx.get(f"{url}/api/explanations/{doc['id']}/report.html")
    assert report.status_code == 200 and "blocklens-data" in report.text


def test_twenty_concurrent_requests_for_a_cached_explanation(live_server):
    url = live_server.url
    post(url, image="dog").raise_for_status()
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: post(url, image="dog"), range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["id"] for r in responses}) == 1


def test_upload_renders_missing_pictures_with_progress(live_server):
    url = live_server.url
    buf = io.BytesIO()
    Image.open(bl.bundled_image("chelsea")).save(buf, format="PNG")
    r = post(url, content=buf.getvalue(), layers="blocks.5,blocks.9")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["predictions"][0]["label"] == "tiger cat"
    assert [L["layer"] for L in doc["layers"]] == ["blocks.5", "blocks.9"]
    assert doc["job"], "chelsea at blocks.5/9 is not in the store: a render job starts"
    statuses = wait_job(url, doc["job"])
    assert statuses[-1]["state"] == "done", statuses[-1]
    fractions = [s["fraction"] for s in statuses]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    ready = [k for s in statuses for k in s["ready"]]
    assert len(ready) == len(set(ready))  # each icon announced once
    again = httpx.get(f"{url}/api/explanations/{doc['id']}").json()
    assert all(again["icons"].values()) and all(L["grid"]["url"] for L in again["layers"])
    assert again["job"] is None


def png_bomb(w=12000, h=6000) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (w, h)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def test_uploads_are_capped_and_checked_by_content(live_server):
    url = live_server.url
    too_big = post(url, content=b"\x89PNG" + b"\0" * (17 * 1024 * 1024))
    assert too_big.status_code == 413 and "MB" in too_big.json()["error"]
    bomb = png_bomb()
    assert len(bomb) < 100_000
    r = post(url, content=bomb)
    assert r.status_code == 413 and "pixels" in r.json()["error"]
    r = post(url, content=b"<html><script>alert(1)</script></html>")  # not an image, whatever its name
    assert r.status_code == 400 and "upload" in r.json()["error"]
    buf = io.BytesIO()
    Image.open(bl.bundled_image("chelsea")).save(buf, format="PNG")
    r = post(url, content=buf.getvalue()[:5000])  # truncated
    assert r.status_code == 400
    assert httpx.get(url + "/api/health").json()["ok"]


@pytest.mark.parametrize("path", [
    "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fserver.py",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/api/icons/..%2f..%2f..%2fetc%2fpasswd",
    "/api/icons/../../etc/passwd", "/api/images/..%2f..%2fimages.py", "/api/images/%2fetc%2fpasswd",
    "/api/explanations/..%2f..%2fetc/image.png", "/static//etc/passwd", "/..%2f..%2fetc/passwd",
])
def test_no_file_outside_the_app_folders(live_server, path):
    conn = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=10)
    conn.request("GET", path)  # sent as is: no client-side normalization of the dots
    res = conn.getresponse()
    body = res.read()
    conn.close()
    assert res.status in (400, 404), (path, res.status)
    assert b"root:" not in body and b"import " not in body


def test_errors_are_clear_and_leave_the_server_healthy(live_server, monkeypatch):
    url = live_server.url
    r = post(url, image="dog", layers="blocks.99")
    assert r.status_code == 400 and "blocks.99" in r.json()["error"]
    r = post(url, image="nosuchphoto")
    assert r.status_code == 404 and "dog" in r.json()["error"]
    r = post(url, image="dog", model="resnet9000")
    assert r.status_code == 400 and "efficientnet_lite0" in r.json()["error"]
    r = post(url, image="dog", layers="blocks.1,blocks.3,blocks.5,blocks.7,blocks.9")
    assert r.status_code == 400 and "at most" in r.json()["error"]
    assert httpx.get(url + "/api/jobs/nope").status_code == 404
    r = httpx.get(url + "/api/models/resnet9000")
    assert r.status_code == 404 and "efficientnet_lite0" in r.json()["error"]
    assert httpx.get(url + "/api/explanations/0123456789abcdef0123").status_code == 404

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(live_server.state, "explain", boom)
    r = post(url, image="dog")
    assert r.status_code == 500 and "still running" in r.json()["error"]
    monkeypatch.undo()
    assert httpx.get(url + "/api/health").json()["ok"]
    assert post(url, image="dog").status_code == 200


def test_layer_sprite_sheets_replace_single_icons(lite0, tiny_explanation, tmp_path):
    """With a precompute's sprite sheet in the store, the page gets one picture for the layer (and the report
    inlines it once) instead of one request per icon."""
    import shutil

    from fastapi.testclient import TestClient

    from blocklens.recipes import recipe_for
    from blocklens.precompute import write_sprite
    from blocklens.store import IconStore
    from blocklens.app import BlocklensApp, create_app
    from conftest import TINY_GRID, TINY_ICONS

    e, src = tiny_explanation
    shutil.copytree(src, tmp_path / "store")
    store = IconStore(tmp_path / "store")
    assert write_sprite(store, lite0, "blocks.7", recipe_for(**TINY_ICONS))
    state = BlocklensApp(store=store, icon_recipe=TINY_ICONS, grid_recipe=TINY_GRID, render=False)
    with TestClient(create_app(state)) as client:
        doc = client.post("/api/explain", params={"image": "dog"}).json()
        (sprite,) = doc["sprites"]
        assert sprite["layer"] == "blocks.7"
        shown = set(doc["layers"][0]["channel_icons"].values())
        assert set(sprite["cells"]) == shown  # every blocks.7 channel icon is cut from the sheet
        assert all(doc["icons"][k] is None for k in shown)
        assert all(doc["icons"][k] for k in doc["layers"][1]["channel_icons"].values())
        png = client.get(sprite["url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        sheet = Image.open(io.BytesIO(png.content))
        x, y = next(iter(sprite["cells"].values()))
        assert sheet.size[0] >= x + 32 and sheet.size[1] >= y + 32
        assert client.get(sprite["url"].replace("blocks.7", "..")).status_code in (400, 404)
        report = client.get(f"/api/explanations/{doc['id']}/report.html").text
        assert report.count("data:image/png;base64,") < len(e.icons)  # the sheet, not every icon of the layer


def test_a_failed_render_job_is_reported_and_retried(live_server, monkeypatch):
    import sys

    url = live_server.url
    explain_module = sys.modules["blocklens.explain"]

    def broken(*a, **k):
        raise RuntimeError("simulated renderer failure")

    monkeypatch.setattr(explain_module, "cached_grid", broken)
    doc = post(url, image="giraffe").json()
    statuses = wait_job(url, doc["job"])
    assert statuses[-1]["state"] == "error" and "simulated renderer failure" in statuses[-1]["error"]
    assert httpx.get(url + "/api/health").json()["ok"]
    monkeypatch.undo()
    again = post(url, image="giraffe").json()
    assert again["id"] == doc["id"] and again["job"] and again["job"] != doc["job"]
    assert wait_job(url, again["job"])[-1]["state"] == "done"
    assert all(L["grid"]["url"] for L in httpx.get(f"{url}/api/explanations/{doc['id']}").json()["layers"])


def test_serve_model_specs_join_the_picker_and_explain(user_pkg, tmp_path, capsys):
    """``serve --model SPEC`` (repeatable, ``--weights`` for the one before): the picker lists the user's model
    first, loads it on demand, explains with it; a spec that was not served is refused, never imported."""
    import torch
    from fastapi.testclient import TestClient

    from blocklens.app import BlocklensApp, create_app
    from conftest import TINY_GRID, TINY_ICONS

    args = build_parser().parse_args(["serve", "--model", "mypkg.nets:build", "--model", "mypkg.nets:wrapped",
                                      "--weights", "w.pth"])
    assert args.models == [("mypkg.nets:build", None), ("mypkg.nets:wrapped", "w.pth")]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--weights", "w.pth"])
    assert "goes after the --model" in capsys.readouterr().err

    net = bl.load_model("mypkg.nets:wrapped").module
    torch.save({k: torch.randn_like(v) for k, v in net.state_dict().items()}, tmp_path / "w.pth")
    state = BlocklensApp(store=tmp_path / "store", preset="default", icon_recipe=TINY_ICONS, grid_recipe=TINY_GRID,
                         render=False, models=["mypkg.nets:build", ("mypkg.nets:wrapped", tmp_path / "w.pth")])
    with TestClient(create_app(state)) as client:
        listing = client.get("/api/models").json()
        names = [m["name"] for m in listing]
        assert names[:2] == ["mypkg.nets:build", "mypkg.nets:wrapped"] and "efficientnet_lite0" in names
        first, second = listing[0], listing[1]
        assert first["installed"] and [l["name"] for l in first["layers"]][:2] == ["0", "1"]  # the first one loaded
        assert "layers" not in second and str(tmp_path / "w.pth") in second["description"]  # loads when picked
        info = client.get("/api/models/mypkg.nets:wrapped").json()
        assert info["input_size"] == 48 and info["default_layers"]
        doc = client.post("/api/explain", params={"image": "dog", "model": "mypkg.nets:build"}).json()
        assert doc["model"] == "mypkg.nets:build" and doc["predictions"][0]["label"].startswith("class ")
        doc = client.post("/api/explain", params={"image": "dog", "model": "mypkg.nets:wrapped"}).json()
        assert doc["predictions"][0]["label"].startswith("thing ")
        assert state._models[("mypkg.nets:wrapped", "analysis")].weights == str(tmp_path / "w.pth")
        r = client.post("/api/explain", params={"image": "dog", "model": "mypkg.nets:raises"})
        assert r.status_code == 400 and "mypkg.nets:build" in r.json()["error"]
        assert ("mypkg.nets:raises", "analysis") not in state._models
        assert client.get("/api/models/os:getcwd").status_code == 404


def test_class_concepts_refuse_bad_input_before_any_work(lite0, tmp_path):
    """The concepts page's endpoint checks what it can before starting a job, and answers 400 with the reason: an
    unknown class (with the closest names), a class the folder has no images of, the same class twice."""
    import shutil

    from fastapi.testclient import TestClient

    from blocklens.app import BlocklensApp, create_app
    from blocklens.images import bundled_images

    photos = bundled_images()
    for label, name in (("malamute", "dog"), ("tabby", "chelsea")):  # ImageFolder: subfolders named as classes
        (tmp_path / "photos" / label).mkdir(parents=True)
        shutil.copy(photos[name], tmp_path / "photos" / label / photos[name].name)
    store = bl.IconStore(tmp_path / "store")
    idx = bl.build_index(tmp_path / "photos", lite0, ["blocks.11"], store=store, k=2, samples=2, classes=0,
                         progress=False)
    state = BlocklensApp(store=store, render=False)
    state._models[(lite0.name, "concepts")] = lite0  # the session's copy (only read), instead of loading a third
    with TestClient(create_app(state)) as client:
        info = client.get(f"/api/indexes/{idx.key}/classes").json()
        assert info["labels_from"] == "folders" and info["layers"] == ["blocks.11"] and len(info["labels"]) == 1000
        assert [(c["label"], c["images"]) for c in info["folder_classes"]] == [("malamute", 1), ("tabby", 1)]

        def ask(**params):
            return client.post("/api/concepts", params={"index": idx.key, "layer": "blocks.11", **params})

        r = ask(**{"class": "malamoot"})
        assert r.status_code == 400 and "unknown class 'malamoot'" in r.json()["error"]
        assert "malamute" in r.json()["error"]  # the closest names
        r = ask(**{"class": "Border collie"})
        assert r.status_code == 400
        assert r.json()["error"].startswith("no images of class 'Border collie'") and "malamute" in r.json()["error"]
        r = ask(**{"class": "malamute", "vs": "tabbby"})
        assert r.status_code == 400 and "unknown class 'tabbby'" in r.json()["error"] and "tabby" in r.json()["error"]
        r = ask(**{"class": "malamute", "vs": "malamute"})
        assert r.status_code == 400 and "same class" in r.json()["error"]
        r = ask(**{"class": "malamute", "layer": "fc"})
        assert r.status_code == 400
        assert client.post("/api/concepts", params={"index": "0" * 16, "class": "malamute"}).status_code in (400, 404)
        assert client.get("/api/concepts/" + "0" * 20).status_code == 404
        assert not state.jobs  # nothing was started
        assert client.get("/api/health").json()["ok"]
