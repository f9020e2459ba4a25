"""The rendered dashboard JSON: uids, layout, units, targets, variables, links, annotations, SQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from trainguard.grafana.dashboards import UIDS, all_dashboards
from trainguard.grafana.macros import ALL, MACROS, expand
from trainguard.grafana.model import Dashboard, Panel
from trainguard.grafana.render import DATASOURCE_TYPE, dumps, render

DS_REF = {"type": DATASOURCE_TYPE, "uid": "${datasource}"}

BOARDS = all_dashboards()
DOCS = {d.uid: render(d, link_titles={b.uid: b.title for b in BOARDS}) for d in BOARDS}
PANELS = [(d.uid, p) for d in BOARDS for p in d.panels]
IDS = [f"{uid}/{p.title}" for uid, p in PANELS]


def test_the_four_dashboards_keep_their_stable_uids():
    assert tuple(d.uid for d in BOARDS) == UIDS == (
        "trainguard-fleet", "trainguard-job", "trainguard-alerts", "trainguard-pipeline")
    assert all(DOCS[uid]["uid"] == uid and DOCS[uid]["schemaVersion"] == 42 for uid in UIDS)


def test_the_job_dashboard_keeps_the_variables_alert_links_and_reports_use():
    job = DOCS["trainguard-job"]["templating"]["list"]
    assert [v["name"] for v in job] == ["datasource", "cluster", "job", "node", "rank"]


def test_the_job_variable_is_one_job_by_default_never_all():
    (job,) = [v for v in DOCS["trainguard-job"]["templating"]["list"] if v["name"] == "job"]
    assert job["includeAll"] is False and job["multi"] is False and job["current"] == {}


def test_every_dashboard_picks_its_clickhouse_data_source_through_a_variable():
    for doc in DOCS.values():
        ds_var = doc["templating"]["list"][0]
        assert (ds_var["name"], ds_var["type"], ds_var["query"]) == (
            "datasource", "datasource", "grafana-clickhouse-datasource")
        assert ds_var["current"]["value"] == "trainguard-clickhouse"  # the provisioned uid
        assert not ds_var["includeAll"] and not ds_var["multi"]


def test_the_variables_default_is_the_provisioned_data_source():
    path = Path(__file__).resolve().parents[3] / "infra/grafana/provisioning/datasources"
    text = (path / "trainguard.yaml").read_text(encoding="utf-8")
    uid = re.search(r"^\s+uid:\s*(\S+)", text, re.M)
    kind = re.search(r"^\s+type:\s*(\S+)", text, re.M)
    assert uid and kind
    for doc in DOCS.values():
        ds_var = doc["templating"]["list"][0]
        assert (ds_var["current"]["value"], ds_var["query"]) == (uid.group(1), kind.group(1))


def test_another_default_data_source_uid_changes_only_the_variables_selection():
    doc = render(BOARDS[0], datasource_uid="ch-prod")
    assert doc["templating"]["list"][0]["current"]["value"] == "ch-prod"
    assert "ch-prod" not in dumps({k: v for k, v in doc.items() if k != "templating"})


def test_every_panel_target_variable_and_annotation_names_the_data_source_variable():
    for doc in DOCS.values():
        for panel in doc["panels"]:
            assert panel["datasource"] == DS_REF
            (target,) = panel["targets"]
            assert target["datasource"] == DS_REF and target["refId"] == "A"
            assert target["editorType"] == "sql" and target["rawSql"]
        queries = [v for v in doc["templating"]["list"] if v["type"] == "query"]
        assert all(v["datasource"] == DS_REF for v in queries)
        extra = [a for a in doc["annotations"]["list"] if not a.get("builtIn")]
        assert all(a["datasource"] == DS_REF == a["target"]["datasource"] for a in extra)
        assert "trainguard-clickhouse" not in dumps(
            {k: v for k, v in doc.items() if k != "templating"})


def test_the_target_format_is_the_plugins_number_with_its_query_type():
    for doc in DOCS.values():
        for panel in doc["panels"]:
            target = panel["targets"][0]
            want = (1, "table") if panel["type"] == "table" else (0, "timeseries")
            assert (target["format"], target["queryType"]) == want, panel["title"]
            assert target["pluginVersion"].startswith("4.")


def test_runbook_and_dashboard_urls_of_open_alerts_are_links_to_their_own_value():
    [panel] = [p for p in DOCS["trainguard-alerts"]["panels"] if p["title"] == "Open alerts"]
    links = {o["matcher"]["options"]: o["properties"] for o in panel["fieldConfig"]["overrides"]}
    assert set(links) == {"runbook_url", "dashboard_url"}
    for column, props in links.items():
        [(prop_id, [link])] = [(p["id"], p["value"]) for p in props]
        assert prop_id == "links" and link["url"] == "${__value.raw}"
        assert link["targetBlank"] is (column == "runbook_url")


def test_link_columns_are_columns_their_panel_returns():
    for _, panel in PANELS:
        assert {link.column for link in panel.links} <= set(panel.columns), panel.title


def test_the_job_dashboard_draws_alerts_over_its_time_series_only():
    doc = DOCS["trainguard-job"]
    builtin, alerts = doc["annotations"]["list"]
    assert builtin["builtIn"] == 1 and alerts["name"] == "Alerts" and alerts["enable"]
    series = [p["id"] for p in doc["panels"] if p["type"] == "timeseries"]
    assert alerts["filter"] == {"exclude": False, "ids": series} and len(series) >= 6
    target = alerts["target"]
    assert (target["refId"], target["queryType"], target["format"]) == ("annotation", "table", 1)
    assert "trainguard.alerts" in target["rawSql"] and "$__conditionalAll(job_id" in (
        target["rawSql"])


def test_only_the_job_dashboard_has_alert_annotations():
    others = [len(DOCS[uid]["annotations"]["list"]) for uid in UIDS if uid != "trainguard-job"]
    assert others == [1, 1, 1]


def test_units_reach_the_field_config():
    units = {(p["title"]): p["fieldConfig"]["defaults"]["unit"]
             for doc in DOCS.values() for p in doc["panels"]}
    assert units["GPU utilization by node"] == "percent"
    assert units["Power draw per node"] == "watt"
    assert units["Hottest GPU per node"] == "celsius"
    assert units["Step time per rank"] == "s"
    assert units["Sink batch latency"] == "ms"
    heatmap = DOCS["trainguard-fleet"]["panels"][0]
    assert heatmap["options"]["cellValues"] == {"unit": "percent"}


@pytest.mark.parametrize("uid", UIDS)
def test_panels_tile_the_grid_without_overlap(uid):
    taken: set[tuple[int, int]] = set()
    for i, panel in enumerate(DOCS[uid]["panels"], 1):
        g = panel["gridPos"]
        assert panel["id"] == i and 0 <= g["x"] and g["x"] + g["w"] <= 24
        cells = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells


def test_links_carry_time_and_variables_to_the_other_dashboards():
    for uid, doc in DOCS.items():
        targets = {link["url"] for link in doc["links"]}
        assert targets == {f"/d/{other}" for other in UIDS if other != uid}
        assert all(link["keepTime"] and link["includeVars"] for link in doc["links"])
        assert all(link["title"].startswith("trainguard / ") for link in doc["links"])


def test_variables_are_plugin_sql_queries_refreshed_with_the_time_range():
    for doc in DOCS.values():
        for var in doc["templating"]["list"][1:]:
            assert var["type"] == "query" and var["refresh"] == 2
            assert var["query"] == {"editorType": "sql", "rawSql": var["definition"]}


def test_the_database_is_filled_in_everywhere():
    text = dumps(render(BOARDS[1], database="prod_tg"))
    assert "{database}" not in text and "prod_tg.steps" in text


def test_rendering_is_deterministic_with_sorted_keys():
    text = dumps(DOCS["trainguard-fleet"])
    assert text == dumps(render(BOARDS[0], link_titles={b.uid: b.title for b in BOARDS}))
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_a_panel_wider_than_the_row_left_wraps_below_the_tallest():
    board = Dashboard("u", "t", "", panels=(
        Panel("a", "timeseries", "SELECT 1", width=12, height=10),
        Panel("b", "timeseries", "SELECT 1", width=6, height=4),
        Panel("c", "table", "SELECT 1", format="table", width=12)))
    grids = [p["gridPos"] for p in render(board)["panels"]]
    assert grids == [{"x": 0, "y": 0, "w": 12, "h": 10}, {"x": 12, "y": 0, "w": 6, "h": 4},
                     {"x": 0, "y": 10, "w": 12, "h": 8}]


# -- the panel SQL, statically ------------------------------------------------------------


@pytest.mark.parametrize(("uid", "panel"), PANELS, ids=IDS)
def test_time_series_panels_declare_time_first_and_tables_use_the_table_format(uid, panel):
    assert panel.columns, "declare the columns, so verification can check them"
    if panel.kind == "table":
        assert panel.format == "table"
    else:
        assert panel.format == "time_series" and panel.columns[0] == "time"
    assert panel.series is None or panel.series in panel.columns


@pytest.mark.parametrize(("uid", "panel"), PANELS, ids=IDS)
def test_every_variable_use_sits_in_conditional_all_so_all_needs_no_value_list(uid, panel):
    every = {"cluster": ALL, "job": ALL, "node": ALL, "rank": ALL, "worker": ALL}
    sql = expand(panel.sql, start=0, end=3600, variables=every, database="d", interval_s=1)
    assert "$" not in sql


def test_variable_and_annotation_queries_also_expand_with_every_variable_all():
    every = {"cluster": ALL, "job": ALL, "node": ALL, "rank": ALL, "worker": ALL}
    for board in BOARDS:
        for query in [v.sql for v in board.variables] + [a.sql for a in board.annotations]:
            assert "$" not in expand(query, start=0, end=1, variables=every, database="d",
                                     interval_s=1)


@pytest.mark.parametrize(("uid", "panel"), PANELS, ids=IDS)
def test_no_macro_without_arguments_is_followed_by_an_opening_parenthesis(uid, panel):
    # Some plugin versions read the next "(...)" after such a macro as its arguments.
    bare = {m for m in MACROS if m in ("fromTime", "toTime", "fromTime_ms", "toTime_ms",
                                       "interval_s")}
    for m in re.finditer(r"\$__(\w+)", panel.sql):
        if m.group(1) in bare:
            rest = panel.sql[m.end():]
            first = re.search(r"[()]", rest)
            assert first is None or first.group(0) == ")", f"{m.group(0)} in {panel.title}"


def test_the_timeline_has_one_row_per_registered_check():
    from trainguard.grafana.dashboards.job import JOB
    from trainguard.schemas.records import CHECK_NAMES

    [timeline] = [p for p in JOB.panels if p.title == "Consistency checks"]
    assert timeline.columns == ("time", *CHECK_NAMES)
