"""The plugin's macros and Grafana's variables expand as the ClickHouse data source does."""

from __future__ import annotations

import pytest

from trainguard.grafana.macros import ALL, MACROS, MacroError, expand, is_all

START = 1700000000.75  # 2023-11-14 22:13:20.750 UTC
END = 1700003600.25
VARS = {"job": "job-7", "node": ["node-01", "node-02"], "rank": ALL}


def x(sql: str, variables=None, interval_s: float = 30, **kw) -> str:
    return expand(sql, start=START, end=END, variables=VARS if variables is None else variables,
                  database="tg", interval_s=interval_s, **kw)


# -- the plugin's back-end macros --------------------------------------------------------


@pytest.mark.parametrize(("sql", "want"), [
    ("$__fromTime", "toDateTime(1700000000)"),
    ("$__toTime", "toDateTime(1700003600)"),
    ("$__fromTime_ms", "fromUnixTimestamp64Milli(1700000000750)"),
    ("$__toTime_ms", "fromUnixTimestamp64Milli(1700003600250)"),
    ("$__timeFilter(ts)", "ts >= toDateTime(1700000000) AND ts <= toDateTime(1700003600)"),
    ("$__timeFilter_ms(ts)",
     "ts >= fromUnixTimestamp64Milli(1700000000750) "
     "AND ts <= fromUnixTimestamp64Milli(1700003600250)"),
    ("$__dateFilter(d)", "d >= toDate('2023-11-14') AND d <= toDate('2023-11-14')"),
    ("$__dateTimeFilter(d, t)",
     "(d >= toDate('2023-11-14') AND d <= toDate('2023-11-14')) AND "
     "(t >= toDateTime(1700000000) AND t <= toDateTime(1700003600))"),
    ("$__dt(d,t)",
     "(d >= toDate('2023-11-14') AND d <= toDate('2023-11-14')) AND "
     "(t >= toDateTime(1700000000) AND t <= toDateTime(1700003600))"),
    ("$__timeFrom(ts)", "ts >= toDateTime(1700000000)"),
    ("$__timeTo(ts)", "ts <= toDateTime(1700003600)"),
    ("$__timeInterval(ts)", "toStartOfInterval(toDateTime(ts), INTERVAL 30 second)"),
    ("$__timeInterval_ms(ts)",
     "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 30000 millisecond)"),
    ("$__interval_s", "30"),
    ("$__timeGroup(ts, 5m)", "toStartOfInterval(toDateTime(ts), INTERVAL 300 second)"),
    ("$__timeGroup(ts, '1h')", "toStartOfInterval(toDateTime(ts), INTERVAL 3600 second)"),
])
def test_each_plugin_macro_expands_as_documented(sql, want):
    assert x(sql) == want


def test_every_known_macro_has_a_case_above():
    assert MACROS == {
        "fromTime", "toTime", "fromTime_ms", "toTime_ms", "timeFilter", "timeFilter_ms",
        "dateFilter", "dateTimeFilter", "dt", "timeFrom", "timeTo", "timeInterval",
        "timeInterval_ms", "interval_s", "timeGroup", "conditionalAll",
    }


def test_the_interval_is_whole_seconds_and_at_least_one():
    assert x("$__interval_s", interval_s=0.2) == "1"
    assert x("$__interval_s", interval_s=59.9) == "59"
    assert x("$__timeInterval_ms(ts)", interval_s=0.0001).endswith("INTERVAL 1 millisecond)")


def test_a_macro_without_arguments_takes_empty_parentheses():
    assert x("$__interval_s() + $__fromTime()") == "30 + toDateTime(1700000000)"


def test_a_macro_without_arguments_leaves_later_parentheses_alone():
    assert x("$__fromTime AND toDate(ts) > 0") == "toDateTime(1700000000) AND toDate(ts) > 0"


def test_arguments_may_hold_parentheses_and_inner_macros_expand_first():
    assert x("$__timeFilter(toDateTime(ts))") == (
        "toDateTime(ts) >= toDateTime(1700000000) AND toDateTime(ts) <= toDateTime(1700003600)")
    assert x("$__timeInterval($__fromTime)") == (
        "toStartOfInterval(toDateTime(toDateTime(1700000000)), INTERVAL 30 second)")


def test_every_comma_splits_macro_arguments_as_the_plugin_does():
    with pytest.raises(MacroError, match=r"\$__timeInterval expects 1 argument\(s\), received 2"):
        x("$__timeInterval(toTimeZone(ts, 'UTC'))")


def test_a_macro_missing_its_arguments_is_an_error():
    with pytest.raises(MacroError, match=r"\$__timeFilter expects 1 argument\(s\), received none"):
        x("WHERE $__timeFilter")


def test_arguments_to_a_macro_that_takes_none_are_an_error():
    with pytest.raises(MacroError, match=r"\$__toTime takes no arguments"):
        x("$__toTime(ts)")


def test_an_unknown_macro_is_an_error_naming_the_known_ones():
    with pytest.raises(MacroError, match=r"unknown macro \$__timeFiltr; known: .*\$__timeFilter"):
        x("$__timeFiltr(ts)")


def test_a_bad_time_group_period_is_an_error():
    with pytest.raises(MacroError, match="expected a duration such as 5m"):
        x("$__timeGroup(ts, soon)")


def test_unbalanced_parentheses_are_an_error():
    with pytest.raises(MacroError, match="unbalanced parentheses"):
        x("$__timeFilter(ts")


def test_the_database_token_is_filled_in():
    assert x("SELECT 1 FROM {database}.steps") == "SELECT 1 FROM tg.steps"


# -- $__conditionalAll (the plugin's front end) -----------------------------------------


@pytest.mark.parametrize("value", [ALL, "All", [ALL], "", []])
def test_conditional_all_is_1_eq_1_for_all_or_nothing_selected(value):
    assert x("WHERE $__conditionalAll(node IN (${node:singlequote}), $node)",
             {"node": value}) == "WHERE 1=1"


def test_conditional_all_keeps_the_condition_for_a_selection():
    assert x("$__conditionalAll(node IN (${node:singlequote}), $node)") == (
        "node IN ('node-01','node-02')")


def test_conditional_all_accepts_braces_and_commas_inside_the_condition():
    assert x("$__conditionalAll(hasAny(nodes, [${node:singlequote}]), ${node})") == (
        "hasAny(nodes, ['node-01','node-02'])")


def test_conditional_all_needs_a_plain_variable_reference():
    with pytest.raises(MacroError, match="must be \\$name or \\$\\{name\\}"):
        x("$__conditionalAll(node IN (${node:singlequote}), ${node:singlequote})")


def test_conditional_all_needs_two_arguments():
    with pytest.raises(MacroError, match="takes \\(condition, \\$variable\\), got 1"):
        x("$__conditionalAll(node = 1)")


def test_conditional_all_of_an_unknown_variable_is_an_error():
    with pytest.raises(MacroError, match="unknown variable 'gpu'"):
        x("$__conditionalAll(gpu = 1, $gpu)")


# -- Grafana's variables -----------------------------------------------------------------


@pytest.mark.parametrize(("sql", "want"), [
    ("$job", "job-7"),  # a single value: bare
    ("${job}", "job-7"),
    ("[[job]]", "job-7"),
    ("$node", "'node-01','node-02'"),  # the plugin quotes a multi-value selection
    ("${node:singlequote}", "'node-01','node-02'"),
    ("${job:singlequote}", "'job-7'"),
    ("${node:doublequote}", '"node-01","node-02"'),
    ("${node:sqlstring}", "'node-01','node-02'"),
    ("${node:csv}", "node-01,node-02"),
    ("${node:raw}", "node-01,node-02"),
    ("${node:pipe}", "node-01|node-02"),
    ("[[node:pipe]]", "node-01|node-02"),
    ("${node:json}", '["node-01", "node-02"]'),
    ("${job:json}", '"job-7"'),
])
def test_variables_are_formatted_as_grafana_does(sql, want):
    assert x(sql) == want


def test_quotes_in_values_are_escaped_per_format():
    v = {"job": "it's"}
    assert x("${job:singlequote}", v) == "'it\\'s'"
    assert x("${job:sqlstring}", v) == "'it''s'"


def test_grafana_globals_are_filled_in():
    assert x("$__from $__to ${__interval_ms} $__interval $__range_s $__range_ms", {}) == (
        "1700000000750 1700003600250 30000 30s 3599 3599500")
    assert x("$__interval", {}, interval_s=90) == "1m"  # Grafana's largest whole unit


def test_all_outside_conditional_all_takes_every_option():
    sql = "rank IN (${rank:singlequote})"
    assert x(sql, options={"rank": ["0", "1"]}) == "rank IN ('0','1')"
    with pytest.raises(MacroError, match="variable 'rank' is All outside \\$__conditionalAll"):
        x(sql)


def test_an_unknown_variable_is_an_error_naming_the_known_ones():
    with pytest.raises(MacroError, match="unknown variable 'jobb' in '\\$jobb'; known: job"):
        x("$jobb")


def test_an_unknown_format_is_an_error():
    with pytest.raises(MacroError, match="unknown format 'quoted' for variable 'job'"):
        x("${job:quoted}")


def test_field_access_is_not_supported():
    with pytest.raises(MacroError, match="field access"):
        x("${job.text}")


def test_a_reversed_range_is_an_error():
    with pytest.raises(MacroError, match="expected start <= end"):
        expand("1", start=END, end=START, variables={}, database="tg", interval_s=1)


def test_all_is_the_value_or_the_text_of_the_all_option():
    assert is_all(ALL) and is_all("All") and is_all(["a", ALL])
    assert not is_all("a") and not is_all(["a", "b"])
