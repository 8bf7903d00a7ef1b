import numpy as np
import pytest
import torch
from reference import make_activations


@pytest.fixture
def power_law_acts() -> torch.Tensor:
    return make_activations(3000, np.arange(1, 257, dtype=np.float64) ** -1.0, seed=1)
