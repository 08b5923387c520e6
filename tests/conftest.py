"""Shared test set-up: offline, quiet, deterministic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run full-size (slow) tests")


def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--runslow"):
        return
    import pytest

    skip = pytest.mark.skip(reason="full-size run: use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
