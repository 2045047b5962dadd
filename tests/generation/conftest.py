"""A tiny random LLaMA with item tokens and a random catalog, shared by the generation tests."""

import pytest
from gen_helpers import Catalog, build_catalog


@pytest.fixture(scope="session")
def catalog(tmp_path_factory) -> Catalog:
    return build_catalog(tmp_path_factory.mktemp("tiny_gen"))
