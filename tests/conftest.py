"""Shared test set-up: every test starts from the same global random state."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_global_rng():
    torch.manual_seed(0)
    yield
