"""Store fixtures for pipeline tests: one chdb directory per session, one database per test.

chdb binds a process to a single directory for the life of the process, so every test
in this process shares one session-wide directory and gets its own database in it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trainguard.pipeline.store import ChdbStore


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one chdb directory this test process may open."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def chdb_keeper(chdb_dir: Path) -> Iterator[ChdbStore]:
    """Hold the session's chdb connection open, so tests do not reopen the engine."""
    with ChdbStore(chdb_dir, "default") as store:
        yield store


@pytest.fixture
def chdb_store_factory(chdb_dir: Path, chdb_keeper: ChdbStore) -> Iterator[Callable[[], ChdbStore]]:
    """Make ChdbStores on a fresh database each; dropped and closed after the test."""
    stores: list[ChdbStore] = []

    def make() -> ChdbStore:
        store = ChdbStore(chdb_dir, f"t_{uuid.uuid4().hex[:12]}")
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()  # idempotent: the test may have closed it already
        with ChdbStore(chdb_dir, store.database) as cleanup:
            cleanup.command("DROP DATABASE IF EXISTS {database} SYNC")


@pytest.fixture
def chdb_store(chdb_store_factory: Callable[[], ChdbStore]) -> ChdbStore:
    """A ChdbStore on a fresh, empty database."""
    return chdb_store_factory()
