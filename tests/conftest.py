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
