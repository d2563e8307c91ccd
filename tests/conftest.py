"""Shared fixtures: tiny synthetic TIFF datasets, and an API client on a SQLite store.

The API fixtures build on each other: ``store`` -> ``client`` -> ``admin``/``viewer``. A test
module changes the server's config by overriding ``sections`` (or its own ``store``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_support import ADMIN, VIEWER, login, make_client, server_config
from medfed.config import MedfedConfig
from medfed.data.synthetic import write_synthetic_dataset
from medfed.store import RunStore


@pytest.fixture
def kaggle_dataset(tmp_path: Path) -> Path:
    """Kaggle layout: 2 classes x 16 grey 32 px TIFFs, plus a held-out test/ of 6 per class."""
    return write_synthetic_dataset(
        tmp_path / "kaggle",
        layout="kaggle",
        n_per_class=16,
        num_classes=2,
        size=32,
        test_per_class=6,
    )


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    """Class-folder layout: 2 classes x 16 grey 32 px TIFFs, plus test/ with 6 per class."""
    return write_synthetic_dataset(
        tmp_path / "folders",
        layout="folders",
        n_per_class=16,
        num_classes=2,
        size=32,
        test_per_class=6,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    """A fresh SQLite run store in tmp_path."""
    with RunStore(f"sqlite:///{tmp_path / 'medfed.db'}") as run_store:
        yield run_store


@pytest.fixture
def sections() -> dict[str, Any]:
    """Config sections of the test server beyond its home and secret: none by default."""
    return {}


@pytest.fixture
def cfg(tmp_path: Path, sections: dict[str, Any]) -> MedfedConfig:
    """The test server's config, as ``client`` serves it."""
    return server_config(tmp_path / "home", **sections)


@pytest.fixture
def client(store: RunStore, tmp_path: Path, sections: dict[str, Any]) -> TestClient:
    """A TestClient of the app on ``store``, with an admin and a viewer user."""
    return make_client(store, tmp_path / "home", **sections)


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    """Authorization headers of the admin user."""
    return login(client, ADMIN)


@pytest.fixture
def viewer(client: TestClient) -> dict[str, str]:
    """Authorization headers of the viewer user."""
    return login(client, VIEWER)
