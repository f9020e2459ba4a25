"""``trainguard grafana push`` against a fake Grafana on loopback, through grafana-client.

Decision on data source secrets: Grafana never shows them back, so a push without a
password writes nothing when nothing changed, and a push with one re-sends it in exactly
one idempotent ``PUT`` (visible fields unchanged); dashboards never gain a version for
nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaBadInputError, GrafanaClientError

from tests.trainguard.grafana.fake_grafana import TOKEN, VIEWER_TOKEN, FakeGrafana
from trainguard import __version__, envvars
from trainguard.errors import ConfigError, TrainguardError
from trainguard.grafana.push import (
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    GrafanaAuthError,
    GrafanaConflictError,
    GrafanaError,
    GrafanaUnreachableError,
    PushReport,
    clickhouse_datasource,
    push,
)
from trainguard.grafana.push_cli import register_push

DS = clickhouse_datasource("http://clickhouse:8123", database="trainguard", user="trainguard_ro")


def dashboard(uid: str, title: str, panel_title: str = "GPU utilization") -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "tags": ["trainguard"], "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "10s",
        "panels": [{
            "id": 1, "type": "timeseries", "title": panel_title,
            "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "targets": [{"refId": "A", "format": 0,
                         "rawSql": "SELECT ts, avg(util) FROM gpu WHERE $__timeFilter(ts)"}],
        }],
    }


DASHBOARDS = [dashboard("tg-fleet", "trainguard fleet"), dashboard("tg-job", "trainguard job")]


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with FakeGrafana() as fake:
        yield fake


def client(url: str, token: str = TOKEN) -> GrafanaApi:
    return GrafanaApi.from_url(url, credential=token, timeout=5.0)


def run(fake: FakeGrafana, **kw: Any) -> PushReport:
    args: dict[str, Any] = {"dashboards": DASHBOARDS, "datasource": DS, **kw}
    return push(client(fake.url), **args)


def actions(report: PushReport) -> dict[str, str]:
    return {item.uid: item.action for item in report.items}


def writes(fake: FakeGrafana) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.writes]


# -- idempotence ---------------------------------------------------------------------------


def test_first_push_creates_folder_datasource_and_dashboards(grafana: FakeGrafana) -> None:
    report = run(grafana)

    assert actions(report) == {"trainguard": "created", DATASOURCE_UID: "created",
                               "tg-fleet": "created", "tg-job": "created"}
    assert grafana.folders["trainguard"]["title"] == "trainguard"
    ds = grafana.datasources[DATASOURCE_UID]
    assert (ds["name"], ds["type"], ds["access"]) == ("trainguard ClickHouse", DATASOURCE_TYPE,
                                                      "proxy")
    assert ds["jsonData"] == {"host": "clickhouse", "port": 8123, "protocol": "http",
                              "secure": False, "username": "trainguard_ro",
                              "defaultDatabase": "trainguard"}
    assert ds["secureJsonFields"] == {}  # no password given, none sent
    for uid in ("tg-fleet", "tg-job"):
        assert grafana.dashboards[uid].folder_uid == "trainguard"
        assert grafana.dashboard_versions(uid) == [(1, f"trainguard push {__version__}")]
    post = next(r for r in grafana.requests if r.path == "/api/dashboards/db")
    assert post.body["dashboard"]["id"] is None
    assert (post.body["folderUid"], post.body["overwrite"]) == ("trainguard", True)


def test_second_push_without_changes_writes_nothing(grafana: FakeGrafana) -> None:
    run(grafana)
    grafana.requests.clear()

    report = run(grafana)

    assert set(actions(report).values()) == {"unchanged"}
    assert writes(grafana) == []
    assert grafana.dashboard_versions("tg-fleet") == [(1, f"trainguard push {__version__}")]
    assert report.lines()[-1] == "0 created, 0 updated, 4 unchanged"


def test_password_is_resent_in_one_idempotent_put_and_never_shown(grafana: FakeGrafana) -> None:
    with_password = clickhouse_datasource("http://clickhouse:8123", database="trainguard",
                                          user="trainguard_ro", password="s3cret-ro")
    run(grafana, datasource=with_password)
    before = copy.deepcopy(grafana.datasources[DATASOURCE_UID])
    grafana.requests.clear()

    report = run(grafana, datasource=with_password)

    assert writes(grafana) == [("PUT", f"/api/datasources/uid/{DATASOURCE_UID}")]
    after = grafana.datasources[DATASOURCE_UID]
    assert {**after, "version": 0} == {**before, "version": 0}
    assert grafana.secrets[DATASOURCE_UID] == {"password": "s3cret-ro"}
    assert actions(report)["tg-fleet"] == "unchanged"
    assert "s3cret-ro" not in "\n".join(report.lines()) + repr(report)


def test_changed_dashboard_is_saved_once_with_the_next_version(grafana: FakeGrafana) -> None:
    run(grafana)
    grafana.requests.clear()
    changed = [dashboard("tg-fleet", "trainguard fleet", panel_title="SM clock"), DASHBOARDS[1]]

    report = run(grafana, dashboards=changed)

    assert writes(grafana) == [("POST", "/api/dashboards/db")]
    assert grafana.writes[0].body["dashboard"]["uid"] == "tg-fleet"
    assert actions(report) == {"trainguard": "unchanged", DATASOURCE_UID: "unchanged",
                               "tg-fleet": "updated", "tg-job": "unchanged"}
    assert [v for v, _ in grafana.dashboard_versions("tg-fleet")] == [1, 2]
    assert report.updated[0].version == 2
    assert grafana.dashboards["tg-fleet"].current["panels"][0]["title"] == "SM clock"


def test_dashboard_in_another_folder_is_moved_not_duplicated(grafana: FakeGrafana) -> None:
    grafana.seed_dashboard(DASHBOARDS[0])  # same JSON, in General

    report = run(grafana, dashboards=DASHBOARDS[:1])

    assert actions(report)["tg-fleet"] == "updated"
    assert "moved from folder 'General'" in report.updated[0].detail
    assert grafana.dashboards["tg-fleet"].folder_uid == "trainguard"


def test_folder_with_another_title_is_renamed_with_its_version(grafana: FakeGrafana) -> None:
    grafana.seed_folder("trainguard", "old name")

    report = run(grafana)

    assert actions(report)["trainguard"] == "updated"
    put = next(r for r in grafana.requests if r.method == "PUT")
    assert put.body == {"title": "trainguard", "version": 1}
    assert grafana.folders["trainguard"]["title"] == "trainguard"


def test_changed_datasource_is_updated_naming_the_fields(grafana: FakeGrafana) -> None:
    run(grafana)
    moved = clickhouse_datasource("https://ch.internal:8443/ch", database="tg2",
                                  user="trainguard_ro")

    report = run(grafana, datasource=moved)

    item = next(i for i in report.items if i.kind == "datasource")
    assert item.action == "updated" and item.version == 2
    assert item.detail == ("changed: jsonData.defaultDatabase, jsonData.host, jsonData.path, "
                           "jsonData.port, jsonData.secure")
    assert grafana.datasources[DATASOURCE_UID]["jsonData"]["path"] == "ch"


# -- errors --------------------------------------------------------------------------------


def test_wrong_token_is_an_auth_error_naming_the_role(grafana: FakeGrafana) -> None:
    with pytest.raises(GrafanaAuthError, match="Editor or Admin role") as caught:
        push(client(grafana.url, token="glsa_wrong"), dashboards=DASHBOARDS, datasource=DS)
    assert grafana.url in str(caught.value) and "glsa_wrong" not in str(caught.value)
    assert writes(grafana) == [] and len(grafana.requests) == 1


def test_viewer_token_is_refused_at_the_first_write(grafana: FakeGrafana) -> None:
    with pytest.raises(GrafanaAuthError, match=r"denied creating folder .*403.*Editor"):
        push(client(grafana.url, token=VIEWER_TOKEN), dashboards=DASHBOARDS, datasource=DS)


def test_grafana_down_is_unreachable_naming_the_url() -> None:
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    with pytest.raises(GrafanaUnreachableError, match="Connection refused") as caught:
        push(client(url), dashboards=DASHBOARDS, datasource=DS)
    assert f"cannot reach Grafana at {url} while reading folder" in str(caught.value)
    assert isinstance(caught.value, TrainguardError)


def test_version_conflict_is_a_conflict_error(grafana: FakeGrafana) -> None:
    grafana.fail_next("POST", "/api/dashboards/db", 412, {
        "message": "The dashboard has been changed by someone else", "status": "version-mismatch"})

    with pytest.raises(GrafanaConflictError, match=r"saving dashboard 'tg-fleet'.*412 "
                                                   r"version-mismatch"):
        run(grafana)


def test_server_error_names_what_was_being_done(grafana: FakeGrafana) -> None:
    grafana.fail_next("POST", "/api/datasources", 500, {"message": "plugin not installed"})

    with pytest.raises(GrafanaError, match=r"creating data source .*500: plugin not installed"):
        run(grafana)


def test_provisioned_datasource_that_differs_is_refused(grafana: FakeGrafana) -> None:
    grafana.seed_datasource({**DS, "jsonData": {"host": "elsewhere"}}, read_only=True)

    with pytest.raises(GrafanaError, match="provisioned from a file"):
        run(grafana)
    assert ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}") not in writes(grafana)


def test_provisioned_dashboard_that_differs_is_refused(grafana: FakeGrafana) -> None:
    grafana.seed_folder("trainguard", "trainguard")
    grafana.seed_dashboard(dashboard("tg-fleet", "trainguard fleet", "old"),
                           folder_uid="trainguard", provisioned=True)

    with pytest.raises(GrafanaError, match="'tg-fleet'.*provisioned from a file"):
        run(grafana)


@pytest.mark.parametrize("bad, message", [
    ({"title": "no uid"}, "uid None"),
    ({"uid": "x" * 41, "title": "long"}, "1 to 40"),
    ({"uid": "tg-x"}, "has no title"),
])
def test_invalid_dashboards_are_refused_before_any_request(
    grafana: FakeGrafana, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run(grafana, dashboards=[bad])
    assert grafana.requests == []


# -- dry run -------------------------------------------------------------------------------


def test_dry_run_reads_only_and_says_what_would_change(grafana: FakeGrafana) -> None:
    report = run(grafana, dry_run=True)

    assert {r.method for r in grafana.requests} == {"GET"}
    assert set(actions(report).values()) == {"created"}
    assert grafana.folders == {} and grafana.datasources == {} and grafana.dashboards == {}
    assert report.lines()[0].startswith("would create")
    assert report.lines()[-1] == "dry run, nothing written: 4 created, 0 updated, 0 unchanged"

    run(grafana)
    grafana.requests.clear()
    changed = [dashboard("tg-fleet", "trainguard fleet", panel_title="SM clock"), DASHBOARDS[1]]
    report = run(grafana, dashboards=changed, dry_run=True)

    assert writes(grafana) == []
    assert actions(report)["tg-fleet"] == "updated"
    assert grafana.dashboard_versions("tg-fleet")[-1][0] == 1


# -- the fake follows Grafana's documented API ---------------------------------------------


def test_fake_requires_a_bearer_token(grafana: FakeGrafana) -> None:
    with pytest.raises(GrafanaClientError) as caught:
        GrafanaApi.from_url(grafana.url).folder.get_folder("x")  # basic admin:admin, no token
    assert caught.value.status_code == 401


@pytest.mark.parametrize("payload, message", [
    ({"dashboard": {"uid": "a"}}, "title cannot be empty"),
    ({"dashboard": {"uid": "u" * 41, "title": "t"}}, "max 40"),
    ({"dashboard": {"uid": "a b", "title": "t"}}, "illegal characters"),
    ({"dashboard": {"title": "t"}, "folderUid": "nope"}, "folder not found"),
    ({"dashboard": {"title": "t"}, "overwrite": "yes"}, "boolean"),
    ({"dashboard": {"title": "t"}, "folder": "x"}, "unknown dashboard save field"),
])
def test_fake_rejects_invalid_dashboard_saves(
    grafana: FakeGrafana, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(GrafanaBadInputError, match=message):
        client(grafana.url).dashboard.update_dashboard(payload)


def test_fake_dashboard_overwrite_semantics(grafana: FakeGrafana) -> None:
    api = client(grafana.url)
    first = api.dashboard.update_dashboard({"dashboard": {"uid": "a", "title": "A"}})
    assert {k: first[k] for k in ("uid", "status", "version", "slug")} == {
        "uid": "a", "status": "success", "version": 1, "slug": "a"}

    for body, status in [({"dashboard": {"uid": "a", "title": "A"}}, "version-mismatch"),
                         ({"dashboard": {"uid": "b", "title": "a"}}, "name-exists")]:
        with pytest.raises(GrafanaClientError) as caught:
            api.dashboard.update_dashboard({**body, "overwrite": False})
        assert (caught.value.status_code, caught.value.response["status"]) == (412, status)

    same_version = api.dashboard.update_dashboard({"dashboard": {"uid": "a", "title": "A",
                                                                 "version": 1}})
    forced = api.dashboard.update_dashboard({"dashboard": {"uid": "a", "title": "A"},
                                             "overwrite": True})
    assert (same_version["version"], forced["version"]) == (2, 3)
    got = api.dashboard.get_dashboard("a")
    assert (got["dashboard"]["version"], got["meta"]["folderUid"]) == (3, "")


def test_fake_rejects_datasources_without_type_or_name(grafana: FakeGrafana) -> None:
    api = client(grafana.url)
    for missing in ("type", "name"):
        payload = {k: v for k, v in DS.items() if k != missing}
        with pytest.raises(GrafanaBadInputError, match=f"'{missing}' is required"):
            api.datasource.create_datasource(payload)
    api.datasource.create_datasource(DS)
    with pytest.raises(GrafanaClientError) as caught:
        api.datasource.create_datasource({**DS, "uid": "other"})
    assert caught.value.status_code == 409


def test_fake_folder_update_needs_version_or_overwrite(grafana: FakeGrafana) -> None:
    api = client(grafana.url)
    api.folder.create_folder("T", uid="t")
    with pytest.raises(GrafanaClientError) as caught:
        api.folder.update_folder("t", title="U")  # neither: as real Grafana, 412
    assert caught.value.status_code == 412
    assert api.folder.update_folder("t", title="U", overwrite=True)["version"] == 2


# -- the command ---------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trainguard grafana")
    register_push(parser.add_subparsers(dest="grafana_command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def dashboards_dir(tmp_path: Path) -> Path:
    for d in DASHBOARDS:
        (tmp_path / f"{d['uid']}.json").write_text(json.dumps(d))
    return tmp_path


def test_command_takes_secrets_from_env_and_never_prints_them(
    grafana: FakeGrafana, dashboards_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(envvars.GRAFANA_URL, grafana.url)
    monkeypatch.setenv(envvars.GRAFANA_TOKEN, TOKEN)
    monkeypatch.setenv("CLICKHOUSE_RO_PASSWORD", "s3cret-ro")
    with pytest.raises(SystemExit):
        parse(["push", "--help"])
    args = parse(["push", "--dashboards", str(dashboards_dir)])

    assert args.func(args) == 0

    out = capsys.readouterr().out
    assert TOKEN not in out and "s3cret-ro" not in out
    assert "created         dashboard  tg-fleet 'trainguard fleet' (version 1)" in out
    assert grafana.secrets[DATASOURCE_UID] == {"password": "s3cret-ro"}


def test_command_dry_run_writes_nothing(
    grafana: FakeGrafana, dashboards_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(["push", "--url", grafana.url, "--token", TOKEN, "--dashboards",
                  str(dashboards_dir), "--dry-run"])

    assert args.func(args) == 0

    assert writes(grafana) == []
    assert "would create" in capsys.readouterr().out


def test_command_reaches_grafana_under_a_sub_path(dashboards_dir: Path) -> None:
    with FakeGrafana(prefix="/grafana") as fake:
        args = parse(["push", "--url", fake.url, "--token", TOKEN,
                      "--dashboards", str(dashboards_dir)])
        assert args.func(args) == 0
    assert fake.requests[0].path == "/grafana/api/folders/trainguard"


def test_command_without_token_says_where_to_put_it(
    dashboards_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(envvars.GRAFANA_TOKEN, raising=False)
    args = parse(["push", "--dashboards", str(dashboards_dir)])
    with pytest.raises(ConfigError, match=envvars.GRAFANA_TOKEN):
        args.func(args)


def test_command_refuses_credentials_in_the_url(dashboards_dir: Path) -> None:
    args = parse(["push", "--url", "http://admin:pw@grafana:3000", "--token", "t",
                  "--dashboards", str(dashboards_dir)])
    with pytest.raises(ConfigError, match="carries credentials") as caught:
        args.func(args)
    assert "pw" not in str(caught.value)
