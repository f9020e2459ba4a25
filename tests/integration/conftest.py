"""Fixtures for end-to-end tests: a real stream worker process over the real broker and chdb.

``local_stack`` is a :class:`~trainguard.local.stack.LocalStack` on the session's broker:
a unique topic prefix, its own chdb directory, and a worker the test starts itself
(``worker_process.start(extra_args=...)``, again after ``kill()`` for a restart). A test
module overrides ``stack_pager`` to add a pager, ``stack_auth`` to require signed input,
``stack_secure`` to run on the secure broker.
The test process never opens the chdb directory itself, since chdb binds a process to one
directory for its lifetime and the in-process store tests need theirs: it reads through
the worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainguard.local.stack import LocalStack, PagerMode
from trainguard.local.worker import WorkerProcess


@pytest.fixture
def stack_pager() -> PagerMode:
    """The pager of ``local_stack``; a test module overrides it to page."""
    return "off"


@pytest.fixture
def stack_auth() -> bool:
    """Whether the worker of ``local_stack`` requires signed input; a test module overrides it."""
    return False


@pytest.fixture
def stack_secure() -> bool:
    """Whether ``local_stack`` runs on the session's secure broker (SASL_SSL, ACLs); a test
    module overrides it to run its end-to-end test in secure mode."""
    return False


@pytest.fixture
def local_stack(request: pytest.FixtureRequest, tmp_path: Path, stack_pager: PagerMode,
                stack_auth: bool, stack_secure: bool) -> Iterator[LocalStack]:
    """Topics (and a pager) on the session's broker, and a worker the test starts.

    Secure: the worker logs in as ``worker``; whatever plays the agents produces with
    ``local_stack.agent_security`` to ``local_stack.bootstrap``.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}"
    where: dict[str, Any] = (
        {"broker": request.getfixturevalue("secure_kafka_broker")} if stack_secure else
        {"bootstrap": request.getfixturevalue("bootstrap")})
    with LocalStack(tmp_path, topic_prefix=prefix, pager=stack_pager, start_worker=False,
                    app_id=f"tg-test-{prefix}", batch_within=0.3, auth=stack_auth,
                    **where) as stack:
        yield stack


@pytest.fixture
def worker_process(local_stack: LocalStack) -> WorkerProcess:
    """The stack's worker: unique topic prefix, own chdb directory, started by the test."""
    return local_stack.worker
