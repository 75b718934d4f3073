import pytest
import torch

from frugalml.data import DataConfig, load_data


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def few():
    """Synthetic 4-class data with 8 labels per class and an unlabelled pool of ~300."""
    return load_data(DataConfig(name="synthetic", synthetic_samples=512, labels_per_class=8))
