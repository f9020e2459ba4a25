"""The ACLs of a secured deployment: agents write telemetry, workers alone write verdicts.

With Kafka's standard authorizer (``allow.everyone.if.no.acl.found=false``) whatever is
not granted here is refused. :func:`pipeline_acls` lists the grants of one deployment
(a topic prefix and a worker app id):

- an agent principal may only WRITE (and DESCRIBE) the input topics (samples, steps,
  heartbeats); it can read nothing and write no finding, alert or anomaly;
- a worker principal READs the inputs and alone WRITEs anomalies, findings, alerts,
  detector state and dead letters (and reads them back: alert delivery, state restore);
  it uses its consumer group and transactional ids (the app id) and Faust's own topics
  (``<app id>-`` prefix), and may create the deployment's topics.

:func:`apply_acls` creates them with the Admin API as a principal allowed to (a super
user); :func:`kafka_acls_commands` prints the same grants as ``kafka-acls.sh`` lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kafka.errors import KafkaError

from trainguard.errors import BrokerError
from trainguard.pipeline.kafka_admin import admin_client
from trainguard.pipeline.raw_consumer import raw_group
from trainguard.schemas.kafka_security import KafkaSecurity
from trainguard.schemas.topics import Topics

__all__ = ["AclRule", "apply_acls", "kafka_acls_commands", "pipeline_acls", "verdict_topics"]

log = logging.getLogger(__name__)

Resource = Literal["topic", "group", "transactional_id"]
Operation = Literal["ALL", "READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"]

_AGENT_INPUTS: tuple[Operation, ...] = ("WRITE", "DESCRIBE")
_WORKER_INPUTS: tuple[Operation, ...] = ("READ", "DESCRIBE", "DESCRIBE_CONFIGS", "CREATE")
_WORKER_OUTPUTS: tuple[Operation, ...] = ("WRITE", "READ", "DESCRIBE", "DESCRIBE_CONFIGS",
                                          "CREATE")


@dataclass(frozen=True)
class AclRule:
    """One ALLOW grant: ``principal`` may do ``operation`` on a resource (any host)."""

    principal: str
    resource: Resource
    name: str
    operation: Operation
    prefixed: bool = False


def verdict_topics(topics: Topics) -> tuple[str, ...]:
    """The topics only workers write: anomalies, findings, alerts, state, dead letters."""
    return (topics.anomalies, topics.findings, topics.alerts, topics.baseline_state,
            topics.dead_letters)


def pipeline_acls(
    topics: Topics, *, agents: Iterable[str], workers: Iterable[str], app_id: str,
) -> list[AclRule]:
    """The grants of one deployment for the given agent and worker user names."""
    rules: list[AclRule] = []
    for user in agents:
        principal = _principal(user)
        rules += [AclRule(principal, "topic", t, op)
                  for t in topics.inputs() for op in _AGENT_INPUTS]
    for user in workers:
        principal = _principal(user)
        rules += [AclRule(principal, "topic", t, op)
                  for t in topics.inputs() for op in _WORKER_INPUTS]
        rules += [AclRule(principal, "topic", t, op)
                  for t in verdict_topics(topics) for op in _WORKER_OUTPUTS]
        rules += [AclRule(principal, "group", group, op)
                  for group in (app_id, raw_group(app_id)) for op in ("READ", "DESCRIBE")]
        rules += [AclRule(principal, "topic", f"{app_id}-", "ALL", prefixed=True),
                  AclRule(principal, "transactional_id", app_id, "WRITE", prefixed=True),
                  AclRule(principal, "transactional_id", app_id, "DESCRIBE", prefixed=True)]
    return rules


def apply_acls(bootstrap: str, security: KafkaSecurity, rules: Sequence[AclRule], *,
               timeout: float = 30) -> int:
    """Create ``rules`` and wait until the broker enforces them; return how many were sent.

    Rules that exist already are kept (Kafka dedupes them). The broker learns ACLs from
    the metadata log after the controller committed them, so this waits until it lists
    every one: a client started right after is not refused by a grant still in flight.
    """
    acls = _kafka_acls(rules)
    deadline = time.monotonic() + timeout
    try:
        admin = admin_client(bootstrap, timeout, security)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at '{bootstrap}' as {security.describe()}: "
                          f"{exc}") from exc
    try:
        result = admin.create_acls(acls)
        if result["failed"]:
            raise BrokerError(f"Kafka at '{bootstrap}' refused {len(result['failed'])} of "
                              f"{len(acls)} ACLs: {result['failed'][0]!r}")
        _wait_enforced(admin, acls, deadline, bootstrap)
    except KafkaError as exc:
        raise BrokerError(f"cannot create ACLs at '{bootstrap}' as {security.describe()}: "
                          f"{type(exc).__name__}: {exc}") from exc
    finally:
        admin.close()
    log.info("kafka acls created count=%d bootstrap=%s", len(acls), bootstrap)
    return len(acls)


def _kafka_acls(rules: Sequence[AclRule]) -> list[Any]:
    """kafka-python ``ACL`` objects of ``rules`` (ALLOW, any host)."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    return [ACL(principal=r.principal, host="*", operation=ACLOperation[r.operation],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(
                    ResourceType[r.resource.upper()], r.name,
                    ACLResourcePatternType.PREFIXED if r.prefixed
                    else ACLResourcePatternType.LITERAL))
            for r in rules]


def _wait_enforced(admin: Any, acls: list[Any], deadline: float, bootstrap: str) -> None:
    """Poll the broker's ACLs until it lists all of ``acls``."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    everything = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                           permission_type=ACLPermissionType.ANY,
                           resource_pattern=ResourcePatternFilter(
                               ResourceType.ANY, None, ACLResourcePatternType.ANY))
    while True:
        seen, _error = admin.describe_acls(everything)
        missing = set(acls) - set(seen)
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise BrokerError(f"Kafka at '{bootstrap}' does not enforce {len(missing)} of the "
                              f"ACLs just created, e.g. {next(iter(missing))!r}")
        time.sleep(0.05)


def kafka_acls_commands(rules: Iterable[AclRule], bootstrap: str = "BROKER:9093",
                        command_config: str = "admin.properties") -> list[str]:
    """The same grants as ``kafka-acls.sh --add`` command lines, one per rule."""
    lines = []
    for r in rules:
        op = "".join(w.capitalize() for w in r.operation.split("_"))  # DescribeConfigs
        flag = {"topic": "--topic", "group": "--group",
                "transactional_id": "--transactional-id"}[r.resource]
        pattern = " --resource-pattern-type prefixed" if r.prefixed else ""
        lines.append(f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config "
                     f"{command_config} --add --allow-principal {r.principal} "
                     f"--operation {op} {flag} {r.name}{pattern}")
    return lines


def _principal(user: str) -> str:
    """``User:<name>`` for a SASL user name (kept as is when already a principal)."""
    return user if ":" in user else f"User:{user}"
