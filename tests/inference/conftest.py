"""One tiny trained run (and its loaded recommender) shared by the recommend / evaluate / serve tests."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from genrec.runtime import torch_threads
from genrec.testing import make_tiny_run


def one_torch_thread():
    # A tiny model gains nothing from intra-op threads, and on a busy 2-core machine OpenMP
    # spinning makes each decoding step ~100x slower (2 s vs 20 ms per request).
    return torch_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    with one_torch_thread():
        return make_tiny_run(tmp_path_factory.mktemp("rec_run"), steps=4)


@pytest.fixture(scope="session")
def rec(tiny_run):
    from genrec.inference.recommender import GenRecommender

    return GenRecommender.from_pretrained(tiny_run, device="cpu")


@pytest.fixture(scope="session")
def load_bench():
    """``load_bench(name)``: the script ``bench/<name>.py`` imported as a module."""
    root = Path(__file__).resolve().parents[2] / "bench"

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
