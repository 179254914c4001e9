import pytest
import torch

import blocklens as bl


@pytest.fixture(scope="session")
def lite0():
    """The embedded EfficientNet-Lite0, loaded once per test session (read-only: do not mutate it)."""
    return bl.load_model("efficientnet_lite0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Icon and grid recipes small enough that a whole explanation renders in seconds (pictures are noise; the tests
# check wiring and numbers, the benches and docs/ hold the real pictures).
TINY_ICONS = dict(size=32, steps=2)
TINY_GRID = dict(cell=32, steps=2, batch_cells=16)


@pytest.fixture(scope="session")
def tiny_explanation(lite0, tmp_path_factory):
    """dog.jpg explained with tiny recipes, every picture rendered; and its store."""
    store = tmp_path_factory.mktemp("tiny-store")
    e = bl.explain(bl.bundled_image("dog"), model=lite0, store=store, progress=False, icon_recipe=TINY_ICONS,
                   grid_recipe=TINY_GRID)
    return e, store


@pytest.fixture(scope="session")
def live_server(tiny_explanation):
    """The web app on a free port of 127.0.0.1, in a thread, over the tiny explanation's store (dog.jpg is
    fully cached there; any other image renders its tiny icons in seconds)."""
    import socket
    import threading
    import time
    from types import SimpleNamespace

    import uvicorn

    from blocklens.web.server import BlocklensApp, create_app

    _, store = tiny_explanation
    state = BlocklensApp(store=store, preset="default", icon_recipe=TINY_ICONS, grid_recipe=TINY_GRID)
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
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port, state=state, store=store)
    server.should_exit = True
    thread.join(10)
