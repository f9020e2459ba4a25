"""Silence matchers: amtool's syntax, validation, and what they mute in the lifecycle."""

from __future__ import annotations

from typing import Any

import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts import Silence
from trainguard.pipeline.alerts.lifecycle import AlertLifecycle
from trainguard.pipeline.alerts.matchers import (
    Matcher,
    matchers_from_json,
    matchers_to_json,
    parse_matcher,
)
from trainguard.pipeline.alerts.silences import add_silence, fold_scope, list_silences
from trainguard.pipeline.store import ChdbStore, migrate
from trainguard.schemas.records import Finding

T0 = 1_700_000_000.0


@pytest.mark.parametrize(("text", "expected"), [
    ("check=gpu_throttled", Matcher("check", "=", "gpu_throttled")),
    ("node!=node-07", Matcher("node", "!=", "node-07")),
    ('job=~"pre-.*"', Matcher("job_id", "=~", "pre-.*")),
    ("alertname!~rank_.*", Matcher("check", "!~", "rank_.*")),
    (' node = "node 7" ', Matcher("node", "=", "node 7")),
])
def test_amtool_syntax_parses_with_aliases_and_quotes(text: str, expected: Matcher) -> None:
    assert parse_matcher(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("check=gpu_throtled", "unknown check 'gpu_throtled'; expected one of: agent_silent"),
    ("check=~gpu_(", "bad regular expression"),
    ("host=node-07", "unknown matcher name 'host'; expected one of: check, job_id, node"),
    ("node~node-07", "bad matcher 'node~node-07'"),
])
def test_bad_matchers_are_config_errors_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_matcher(text)


@pytest.mark.parametrize(("matcher", "fields", "hit"), [
    ("node=node-07", {"node": "node-07"}, True),
    ("node=node-07", {"node": "node-070"}, False),
    ("node!=node-07", {}, True),  # an alert without a node is not node-07
    ("node=~node-0[0-7]", {"node": "node-07"}, True),
    ("node=~node-0", {"node": "node-07"}, False),  # anchored, as in Alertmanager
    ("node!~node-0[0-7]", {"node": "node-09"}, True),
    ('node=""', {}, True),
    ("rank=~.+", {"rank": ""}, False),
])
def test_matching_follows_alertmanager(matcher: str, fields: dict[str, str], hit: bool) -> None:
    assert parse_matcher(matcher).matches(fields) is hit


def test_matchers_round_trip_through_their_stored_form() -> None:
    ms = tuple(map(parse_matcher, ["check=straggler", 'node=~"a|b"', "rank!=0"]))
    assert matchers_from_json(matchers_to_json(ms)) == ms
    assert matchers_to_json(()) == "" and matchers_from_json("") == ()
    with pytest.raises(ConfigError, match="malformed"):
        matchers_from_json('[["check", "="]]')


def test_str_is_amtool_syntax() -> None:
    assert [str(parse_matcher(t)) for t in ["check=straggler", 'node=~"a|b"']] == [
        "check=straggler", 'node=~"a|b"']


def silence(*matchers: str, **kw: Any) -> Silence:
    fields: dict[str, Any] = dict(silence_id="s-1", job_id=None, node=None, starts_at=T0 - 60,
                                  ends_at=T0 + 3600, reason="OPS-1", created_by="sre",
                                  matchers=tuple(map(parse_matcher, matchers)))
    fields.update(kw)
    return Silence(**fields)


def test_a_silence_needs_a_job_a_node_or_a_check() -> None:
    with pytest.raises(ConfigError, match="names neither job_id nor node nor a check"):
        silence("check!=straggler", "rank=3")
    assert silence("check=gpu_throttled").matchers  # one check everywhere is scoped enough
    assert silence("node=node-07").matchers


def finding(check: str, node: str, category: str = "hardware", **kw: Any) -> Finding:
    fields: dict[str, Any] = dict(
        finding_id=f"f-{check}-{node}", cluster="c1", job_id="job-1", check=check,
        category=category, ranks=[3], nodes=[node], observed=1.0, expected=0.0, score=1.0,
        summary=f"{check} on {node}", ts=T0, first_seen=T0, last_seen=T0, gpu_index=2,
        check_version="1")
    fields.update(kw)
    return Finding(**fields)


def test_a_check_on_one_node_is_silenced_and_nothing_else() -> None:
    lc = AlertLifecycle()
    lc.set_silences([silence("check=gpu_throttled", node="node-07")])
    out = lc.observe_findings([
        finding("gpu_throttled", "node-07"), finding("gpu_throttled", "node-08"),
        finding("node_idle", "node-07", category="availability"),
    ])
    by = {(a.check, a.node): a for a in out}
    muted = by[("gpu_throttled", "node-07")]
    assert muted.severity == "info" and muted.labels["silenced"] == "s-1"
    assert "silenced" not in by[("gpu_throttled", "node-08")].labels
    assert by[("node_idle", "node-07")].severity == "page"


def test_negative_and_regex_matchers_apply_to_alert_fields() -> None:
    lc = AlertLifecycle()
    lc.set_silences([silence("node=~node-0[0-7]", "check!=node_idle", "gpu=2", job_id="job-1")])
    out = lc.observe_findings([
        finding("gpu_throttled", "node-05"), finding("gpu_throttled", "node-09"),
        finding("node_idle", "node-05", category="availability"),
        finding("straggler", "node-06", gpu_index=1),
    ])
    silenced = sorted((a.check, a.node) for a in out if "silenced" in a.labels)
    assert silenced == [("gpu_throttled", "node-05")]


def test_an_integrity_check_matcher_without_integrity_does_not_mute_it() -> None:
    lc = AlertLifecycle()
    lc.set_silences([silence("check=param_divergence", node="node-07")])
    [alert] = lc.observe_findings([finding("param_divergence", "node-07", "integrity")])
    assert alert.severity == "page" and "silenced" not in alert.labels


@pytest.fixture
def store(chdb_store: ChdbStore) -> ChdbStore:
    migrate(chdb_store)
    return chdb_store


def test_matchers_are_stored_and_read_back(store: ChdbStore) -> None:
    added = add_silence(store, job_id=None, node="node-07", starts_at=T0, ends_at=T0 + 3600,
                        reason="OPS-7", created_by="alice", now=T0,
                        matchers=(parse_matcher("check=gpu_throttled"),
                                  parse_matcher('rank=~"[0-3]"')))
    [stored] = list_silences(store, T0)
    assert stored == added and stored.matchers == added.matchers
    # Stored as a matcher, so that a worker before migration 021 cannot mute all of node-07.
    assert stored.node is None and stored.matchers[0] == Matcher("node", "=", "node-07")
    assert stored.matches("job-1", "node-07", T0 + 1, {"check": "gpu_throttled", "rank": "2"})
    assert not stored.matches("job-1", "node-07", T0 + 1, {"check": "straggler", "rank": "2"})


def test_without_matchers_job_and_node_stay_columns() -> None:
    assert fold_scope("job-1", "node-07", ()) == ("job-1", "node-07", ())
    assert fold_scope("job-1", None, (parse_matcher("check=straggler"),)) == (
        None, None, (Matcher("job_id", "=", "job-1"), Matcher("check", "=", "straggler")))


def test_a_check_only_silence_is_stored(store: ChdbStore) -> None:
    add_silence(store, job_id=None, node=None, starts_at=T0, ends_at=T0 + 3600,
                reason="OPS-8 heat wave", created_by="alice", now=T0,
                matchers=(parse_matcher("check=gpu_throttled"),))
    [stored] = list_silences(store, T0)
    assert (stored.job_id, stored.node) == (None, None)
    assert stored.matches(None, "node-01", T0 + 1, {"check": "gpu_throttled"})
