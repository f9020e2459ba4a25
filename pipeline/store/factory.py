"""Open the right :class:`~trainguard.pipeline.store.base.Store` for a :class:`StoreUrl`."""

from __future__ import annotations

import logging
import os

from trainguard.pipeline.store.base import Store
from trainguard.pipeline.store.chdb_store import ChdbStore
from trainguard.pipeline.store.owner import RemoteReadStore, read_owner
from trainguard.pipeline.store.url import StoreUrl

__all__ = ["open_store"]

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_store(url: StoreUrl, *, read_only: bool = False) -> Store:
    """Open the store at ``url``.

    For ``chdb://`` with ``read_only=True``, a live owner advertised in ``owner.json``
    is read through (:class:`RemoteReadStore`); otherwise the directory is opened
    directly, which fails with a clear :class:`StoreError` if another process owns it.
    """
    if not url.embedded:
        from trainguard.pipeline.store.server_store import ServerStore

        return ServerStore(url)
    assert url.path is not None
    if read_only:
        remote = owner_reader(url)
        if remote is not None:
            return remote
    return ChdbStore(url.path, url.database)


def owner_reader(url: StoreUrl, *, pid: int | None = None) -> RemoteReadStore | None:
    """A reader through the live owner of an embedded store, or None if none answers.

    With ``pid``, only that process counts as the owner: a caller waiting for a freshly
    started worker must not mistake the leftover ``owner.json`` of a killed one for it.
    """
    assert url.path is not None
    owner = read_owner(url.path)
    if owner is None or owner.pid == os.getpid() or not _alive(owner.pid):
        return None
    if pid is not None and owner.pid != pid:
        return None
    remote = RemoteReadStore(url=owner.url, database=url.database, token=owner.token, pid=owner.pid)
    if remote.ping():
        log.info("reading through owner pid=%s url=%s", owner.pid, owner.url)
        return remote
    log.warning("owner not answering pid=%s url=%s", owner.pid, owner.url)
    return None
