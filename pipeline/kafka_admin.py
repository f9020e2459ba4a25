"""Small Kafka admin helpers: wait until a broker answers, create topics idempotently.

The input topics (what node agents write) are created with ``LogAppendTime``: the broker,
not the producer, stamps each record. The worker checks a record's ``ts`` against that
stamp (the ``clock`` window) and measures each node's clock skew from it, so a stamp the
sender chose would let a node with a forged clock vouch for itself.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, SaslAuthenticationFailedError, TopicAlreadyExistsError

from trainguard.errors import BrokerError
from trainguard.schemas.kafka_security import PLAINTEXT, KafkaSecurity
from trainguard.schemas.topics import Topics

__all__ = ["INPUT_TOPIC_CONFIGS", "MAX_DEFAULT_REPLICATION", "admin_client",
           "broker_replication_factor", "choose_replication_factor", "ensure_pipeline_topics",
           "ensure_topics", "timestamp_types", "wait_for_broker"]

#: Topic configs of the input topics: the broker stamps each record's Kafka timestamp.
INPUT_TOPIC_CONFIGS = {"message.timestamp.type": "LogAppendTime"}

#: Replicas of the topics a worker creates when neither it nor the brokers say: as many
#: as there are brokers, up to this (Kafka's usual production setting).
MAX_DEFAULT_REPLICATION = 3

log = logging.getLogger(__name__)

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def wait_for_broker(bootstrap: str, timeout: float,
                    security: KafkaSecurity = PLAINTEXT) -> None:
    """Block until a broker in ``bootstrap`` answers a metadata request, or raise BrokerError.

    With SASL, a refused login fails at once (retrying a wrong password does not help).
    """
    addresses = _parse_bootstrap(bootstrap)
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        # A plain TCP probe first: it fails fast and quietly while the port is closed.
        if any(_tcp_ok(host, port, max(0.05, min(1.0, remaining))) for host, port in addresses):
            try:
                admin = admin_client(bootstrap, remaining, security)
                try:
                    admin.list_topics()
                    return
                finally:
                    admin.close()
            except SaslAuthenticationFailedError as exc:
                raise BrokerError(f"Kafka at '{bootstrap}' refused the login of "
                                  f"{security.describe()}: {exc}") from exc
            except KafkaError as exc:
                last = f"{type(exc).__name__}: {exc}"
        else:
            last = "connection refused or timed out"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            hint = (f" (as {security.describe()}: a refused SASL login looks the same; check "
                    "the user and its password)") if security.sasl else ""
            raise BrokerError(f"cannot reach Kafka at '{bootstrap}' within {timeout:g}s: "
                              f"{last}{hint}")
        time.sleep(min(0.2, remaining))


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    timeout: float = 30,
    configs: dict[str, str] | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> list[str]:
    """Create the topics that do not exist yet and wait until all have partition leaders.

    ``configs`` are topic configs for the topics created (e.g. ``cleanup.policy=compact``).

    Existing topics are left as they are (a differing partition count is logged). Returns
    the names of the topics this call created.
    """
    names = list(dict.fromkeys(topics))
    for name in names:
        if not _TOPIC_RE.match(name) or name in (".", ".."):
            raise BrokerError(f"invalid topic name '{name}'; expected 1-249 of [A-Za-z0-9._-]")
    if partitions < 1:
        raise BrokerError(f"invalid partition count {partitions}; expected >= 1")
    if replication_factor < 1:
        raise BrokerError(f"invalid replication factor {replication_factor}; expected >= 1")
    if not names:
        return []
    deadline = time.monotonic() + timeout
    try:
        admin = admin_client(bootstrap, timeout, security)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at '{bootstrap}': {exc}") from exc
    try:
        spec: dict[str, Any] = {"num_partitions": partitions,
                                "replication_factor": replication_factor}
        if configs:
            spec["configs"] = dict(configs)
        result = admin.create_topics({name: dict(spec) for name in names},
                                     timeout_ms=int(timeout * 1000), raise_errors=False)
        created, existing = _split_results(bootstrap, result)
        admin.wait_for_topics(names, timeout_ms=max(1, int((deadline - time.monotonic()) * 1000)))
        if existing:
            for info in admin.describe_topics(existing):
                count = len(info.get("partitions") or [])
                if count != partitions:
                    log.warning("topic exists with other partition count topic=%s partitions=%d "
                                "wanted=%d", info.get("name"), count, partitions)
    except KafkaError as exc:
        raise BrokerError(f"cannot ensure topics {names} at '{bootstrap}': "
                          f"{type(exc).__name__}: {exc}") from exc
    finally:
        admin.close()
    if created:
        log.info("topics created topics=%s partitions=%d bootstrap=%s",
                 ",".join(created), partitions, bootstrap)
    return created


def ensure_pipeline_topics(bootstrap: str, topics: Topics, *, partitions: int = 3,
                           replication_factor: int = 1, timeout: float = 30,
                           security: KafkaSecurity = PLAINTEXT) -> list[str]:
    """Create every topic of a deployment that does not exist yet; return those created.

    Inputs get :data:`INPUT_TOPIC_CONFIGS` (broker timestamps); an input topic that exists
    with producer timestamps (``CreateTime``) is logged as a warning, since its records'
    Kafka timestamps are then whatever the sender wrote.
    """
    created = ensure_topics(bootstrap, topics.inputs(), partitions=partitions,
                            replication_factor=replication_factor, timeout=timeout,
                            configs=INPUT_TOPIC_CONFIGS, security=security)
    outputs = [t for t in topics.all() if t not in topics.inputs()]
    created += ensure_topics(bootstrap, outputs, partitions=partitions,
                             replication_factor=replication_factor, timeout=timeout,
                             security=security)
    created += ensure_topics(bootstrap, [topics.baseline_state], partitions=1,
                             replication_factor=replication_factor, timeout=timeout,
                             configs={"cleanup.policy": "compact"}, security=security)
    old = [t for t in topics.inputs() if t not in created]
    if old:
        for name, kind in timestamp_types(bootstrap, old, timeout=timeout,
                                          security=security).items():
            if kind != INPUT_TOPIC_CONFIGS["message.timestamp.type"]:
                log.warning(
                    "input topic keeps producer timestamps topic=%s message.timestamp.type=%s: "
                    "a node can then choose the Kafka timestamp its records are checked "
                    "against; set it with kafka-configs.sh --alter --entity-type topics "
                    "--entity-name %s --add-config message.timestamp.type=LogAppendTime",
                    name, kind, name)
    return created


def timestamp_types(bootstrap: str, topics: Iterable[str], *, timeout: float = 30,
                    security: KafkaSecurity = PLAINTEXT) -> dict[str, str]:
    """Each topic's ``message.timestamp.type`` (``CreateTime`` or ``LogAppendTime``)."""
    names = list(topics)
    try:
        admin = admin_client(bootstrap, timeout, security)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at '{bootstrap}': {exc}") from exc
    try:
        result = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, configs=None) for n in names],
            config_filter="all")
    except KafkaError as exc:
        raise BrokerError(f"cannot describe topics {names} at '{bootstrap}': "
                          f"{type(exc).__name__}: {exc}") from exc
    finally:
        admin.close()
    out: dict[str, str] = {}
    for by_name in result.values():
        for name, configs in by_name.items():
            entry = configs.get("message.timestamp.type")
            if entry is not None:
                out[name] = entry["value"] if isinstance(entry, dict) else str(entry)
    return out


def choose_replication_factor(cluster: Mapping[str, Any],
                              broker_configs: Mapping[str, Mapping[str, Any]]) -> int:
    """The replication factor for new topics, from a described cluster.

    ``cluster`` is what the admin client's ``describe_cluster()`` returns (its ``brokers``),
    ``broker_configs`` one broker's configs from ``describe_configs`` (``{name: {"value",
    "config_source"}}``). A ``default.replication.factor`` the operator set (any source
    but Kafka's built-in default of 1) wins; else min(3, live brokers). Never more than
    the live brokers: the topic could not be created.
    """
    brokers = [b for b in cluster.get("brokers") or [] if not b.get("is_fenced", False)]
    live = max(1, len(brokers))
    entry = broker_configs.get("default.replication.factor") or {}
    source = str(entry.get("config_source") or "DEFAULT_CONFIG")
    value = str(entry.get("value") or "")
    if source != "DEFAULT_CONFIG" and value.isdigit() and int(value) >= 1:
        wanted = int(value)
        if wanted > live:
            log.warning("default.replication.factor exceeds live brokers "
                        "default.replication.factor=%d brokers=%d using=%d", wanted, live, live)
        return min(wanted, live)
    return min(MAX_DEFAULT_REPLICATION, live)


def broker_replication_factor(bootstrap: str, *, timeout: float = 30,
                              security: KafkaSecurity = PLAINTEXT) -> int:
    """Ask the cluster at ``bootstrap`` for :func:`choose_replication_factor`'s answer.

    Reading a broker's configs needs ``DescribeConfigs`` on the cluster, which a worker's
    least-privilege user lacks (:mod:`~trainguard.pipeline.kafka_acls`): refused, the
    answer is min(3, brokers), and ``--replication-factor`` says otherwise.
    """
    try:
        admin = admin_client(bootstrap, timeout, security)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at '{bootstrap}': {exc}") from exc
    try:
        try:
            cluster = admin.describe_cluster()
        except KafkaError as exc:
            raise BrokerError(f"cannot describe the Kafka cluster at '{bootstrap}': "
                              f"{type(exc).__name__}: {exc}") from exc
        configs = _broker_configs(admin, cluster.get("brokers") or [])
    finally:
        admin.close()
    factor = choose_replication_factor(cluster, configs)
    log.info("replication factor from the brokers replication_factor=%d brokers=%d",
             factor, len(cluster.get("brokers") or []))
    return factor


def _broker_configs(admin: Any, brokers: list[dict[str, Any]]) -> Mapping[str, Any]:
    """One broker's configs, or ``{}`` when there is none or reading them is refused."""
    if not brokers:
        return {}
    broker_id = str(brokers[0].get("broker_id", brokers[0].get("node_id")))
    try:
        result = admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, broker_id, configs=None)],
            config_filter="all")
    except KafkaError as exc:
        log.info("cannot read the brokers' default.replication.factor error=%s: %s",
                 type(exc).__name__, exc)
        return {}
    found: Mapping[str, Any] = (result.get("broker") or {}).get(broker_id) or {}
    return found


def _split_results(bootstrap: str, result: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Split a CreateTopics result into (created, already existing); raise on other errors."""
    created: list[str] = []
    existing: list[str] = []
    for topic in result["topics"]:
        code = topic["error_code"]
        if code == 0:
            created.append(topic["name"])
        elif code == TopicAlreadyExistsError.errno:
            existing.append(topic["name"])
        else:
            raise BrokerError(f"cannot create topic '{topic['name']}' at '{bootstrap}': error "
                              f"{code} {topic.get('error_message') or ''}".rstrip())
    return created, existing


def admin_client(bootstrap: str, timeout: float, security: KafkaSecurity = PLAINTEXT) -> Any:
    """A kafka-python admin client with ``security``'s settings; the caller closes it."""
    ms = max(100, int(timeout * 1000))
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="trainguard-admin",
                            bootstrap_timeout_ms=ms, request_timeout_ms=max(ms, 1000),
                            **security.kafka_python_kwargs())


def _parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    addresses = []
    for item in bootstrap.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise BrokerError(f"invalid bootstrap server '{item.strip()}' in '{bootstrap}'; "
                              "expected host:port[,host:port]")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _tcp_ok(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
