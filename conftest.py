import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's raw torch work (the CI cores are shared; oversubscribed threads are slow)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Torch and BLAS on one thread for one test (oversubscribed threads are very slow on shared CI cores)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def latent_data():
    """400 rows of the latent model in three blocks (6, 5, 4 columns), 30% of them missing blocks."""
    from sklearn_calmrl.datasets import ampute_modalities, make_latent_modalities

    X, mods, _ = make_latent_modalities(400, block_sizes=(6, 5, 4), latent_dim=3, noise=0.5, random_state=0)
    return ampute_modalities(X, mods, rate=0.3, random_state=0), mods
