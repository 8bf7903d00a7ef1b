import numpy as np
import pytest
import torch
from reference import make_activations


@pytest.fixture
def power_law_acts() -> torch.Tensor:
    return make_activations(3000, np.arange(1, 257, dtype=np.float64) ** -1.0, seed=1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    reason = "no CUDA device visible" if torch.version.cuda else f"torch {torch.__version__} has no CUDA"
    for item in items:
        # The marker, not item.keywords: keywords also hold the names of parent directories,
        # so a checkout in a folder named "cuda" would skip every test.
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
