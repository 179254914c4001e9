import contextlib
import os

import pytest
import torch

import blocklens as bl


# The reference pack (blocklens/data/pack) is read beneath every store; the suite renders what it checks, so it is
# off here, and tests/test_pack.py switches it on where it is the subject (and checks explain with it).
os.environ["BLOCKLENS_PACK"] = "0"
# Ray clusters started by the tests listen on the loopback address only (Ray's own switch for a local-only node;
# without it Ray binds the machine's network address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture()
def with_pack(monkeypatch):
    """The reference pack switched on for one test."""
    monkeypatch.setenv("BLOCKLENS_PACK", "1")


@pytest.fixture(scope="session")
def lite0():
    """The embedded EfficientNet-Lite0, loaded once per test session (read-only: do not mutate it)."""
    return bl.load_model("efficientnet_lite0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Icon and grid recipes small enough that a whole explanation renders in seconds (pictures are noise; the tests
# check wiring and numbers, the benches and docs/ hold the real pictures).
TINY_ICONS = dict(size=32, steps=2, decay_power=1.5, contrast=0.5, coarse=0.5)  # the quick preset, tiny
TINY_GRID = dict(cell=32, steps=2, batch_cells=16)


@pytest.fixture(scope="session")
def tiny_explanation(lite0, tmp_path_factory):
    """dog.jpg explained with tiny recipes, every picture rendered; and its store."""
    store = tmp_path_factory.mktemp("tiny-store")
    e = bl.explain(bl.bundled_image("dog"), model=lite0, store=store, progress=False, icon_recipe=TINY_ICONS,
                   grid_recipe=TINY_GRID)
    return e, store


@pytest.fixture(scope="session")
def small_dictionary(lite0, tmp_path_factory):
    """A concept dictionary of Lite0 over 12 planted-folder photos (tests/planted.py), 6 atoms, tiny icons: saved in
    its store (about 25 s on 2 cores). ``result``, ``store``, ``root``, ``doc`` (its JSON with pictures)."""
    from types import SimpleNamespace

    import planted

    out = tmp_path_factory.mktemp("dictionary")
    root = planted.make_folder(out / "photos", 6)
    store = bl.IconStore(out / "store")
    d = bl.concept_dictionary(lite0, root, atoms=6, epochs=2, stability=False, store=store, progress=False,
                              preset="quick", size=32, steps=2)
    return SimpleNamespace(result=d, store=store, root=root, doc=d.to_json(), out=out)


@contextlib.contextmanager
def serve_app(state):
    """The app of ``state`` (a BlocklensApp) on a free port of 127.0.0.1, in a thread; yields its URL."""
    import socket
    import threading
    import time

    import uvicorn

    from blocklens.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def live_server(tiny_explanation):
    """The web app on a free port of 127.0.0.1, in a thread, over the tiny explanation's store (dog.jpg is
    fully cached there; any other image renders its tiny icons in seconds)."""
    from types import SimpleNamespace

    from blocklens.app import BlocklensApp

    _, store = tiny_explanation
    state = BlocklensApp(store=store, icon_recipe=TINY_ICONS, grid_recipe=TINY_GRID)  # preset by device, as the explanation
    with serve_app(state) as url:
        yield SimpleNamespace(url=url, port=int(url.rsplit(":", 1)[1]), state=state, store=store)


USER_NETS = '''
import torch
from torch import nn

import blocklens as bl


def build():
    """A small conv classifier with 10 classes, at 64 px."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1, stride=2),
                        nn.ReLU(), nn.Conv2d(12, 16, 3, padding=1, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    net.input_size = 64
    return net


def build_224():
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 1000))


def wrapped():
    return bl.wrap(build(), input_size=48, labels=[f"thing {i}" for i in range(10)], name="mine")


class Factory:
    @staticmethod
    def make():
        return build()


NOT_CALLABLE = 3


def returns_int():
    return 3


def needs_arg(depth):
    return build()


def raises():
    raise ValueError("no GPU today")
'''


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    """``mypkg.nets`` (see USER_NETS) in a fresh folder that is the current directory; imported afresh."""
    import sys

    pkg = tmp_path / "userpkgs" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(USER_NETS)
    (pkg / "broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.chdir(pkg.parent)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the resolver adds the current directory; undo it after
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        monkeypatch.delitem(sys.modules, name)
    yield pkg.parent
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]


@pytest.fixture
def memory_url():
    """A fresh ``memory://`` store URL; whatever a test wrote under it is removed afterwards."""
    import uuid

    import fsspec

    url = f"memory://blocklens-test-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(fs._strip_protocol(url)):
        fs.rm(fs._strip_protocol(url), recursive=True)


def assert_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-5, err_msg: str = "") -> None:
    """``actual`` equals ``expected`` up to the last bits of another CPU's float kernels (AVX2, AVX-512, none:
    they sum in other orders), elementwise: ``|actual - expected| <= atol * scale + rtol * |expected|`` with
    ``scale = max(1, max |expected|)``. The absolute part follows the reference's magnitude, so an element near
    zero in an array of values up to 6 is held to the array's precision (6e-5), not to 1e-5 of its own.
    Takes numpy arrays, torch tensors, lists and numbers; compare integer results (indices, counts) exactly."""
    import numpy as np

    def as_array(v):
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().double().numpy()
        return np.asarray(v, dtype=np.float64)

    a, e = as_array(actual), as_array(expected)
    finite = e[np.isfinite(e)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * scale, err_msg=err_msg)


def kill_9_after(proc, finished, count: int, timeout: float = 120) -> None:
    """Wait until ``finished()`` (how many pieces a running subprocess ``proc`` has written) reaches ``count``,
    then kill it with SIGKILL; fails when the run ended before that."""
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and finished() < count:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stderr.close()
