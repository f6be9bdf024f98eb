import pytest
import torch

from helpers import hopper_npz  # noqa: F401  (session fixture)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
