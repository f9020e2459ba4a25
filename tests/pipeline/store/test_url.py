from pathlib import Path

import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.store.url import Secret, StoreUrl


def test_chdb_url_with_three_slashes_is_an_absolute_path():
    url = StoreUrl.parse("chdb:///var/lib/tg")
    assert url.scheme == "chdb" and url.embedded
    assert url.path == Path("/var/lib/tg")
    assert url.database == "trainguard"


@pytest.mark.parametrize("raw", ["chdb://trainguard-data", "chdb://./trainguard-data"])
def test_chdb_url_without_leading_slash_is_relative_to_the_working_directory(
    raw, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert StoreUrl.parse(raw).path == tmp_path.resolve() / "trainguard-data"


def test_chdb_url_takes_the_database_from_the_query_string():
    url = StoreUrl.parse("chdb:///data/store?database=tg_test")
    assert url.database == "tg_test"
    assert str(url) == "chdb:///data/store?database=tg_test"


def test_chdb_url_round_trips_through_str():
    url = StoreUrl.parse("chdb:///data/store")
    assert StoreUrl.parse(str(url)) == url


def test_http_url_defaults_port_database_and_user():
    url = StoreUrl.parse("http://ch.example")
    assert (url.host, url.port, url.database, url.user, url.secure) == (
        "ch.example", 8123, "trainguard", "default", False,
    )


def test_https_url_defaults_to_port_8443_and_is_secure():
    url = StoreUrl.parse("https://reader@ch.example/metrics")
    assert (url.port, url.user, url.database, url.secure) == (8443, "reader", "metrics", True)


def test_password_in_the_url_never_prints():
    url = StoreUrl.parse("http://alice:hunter2@ch.example:9000/db")
    assert url.password == Secret("hunter2")
    assert "hunter2" not in repr(url)
    assert "hunter2" not in str(url)
    assert str(url) == "http://alice:***@ch.example:9000/db"


def test_separate_password_is_used_when_the_url_has_none():
    url = StoreUrl.parse("http://alice@ch.example/db", Secret("s3cret"))
    assert url.password is not None and url.password.reveal() == "s3cret"
    assert "s3cret" not in repr(url) and "s3cret" not in str(url)


def test_secret_repr_is_redacted():
    assert repr(Secret("x")) == "Secret('***')"
    assert str(Secret("x")) == "***"


@pytest.mark.parametrize("raw", ["postgres://db/x", "clickhouse://h", "/var/lib/tg"])
def test_unsupported_scheme_names_the_scheme_and_the_expected_forms(raw):
    with pytest.raises(ConfigError, match="unsupported store URL scheme .*expected chdb://PATH"):
        StoreUrl.parse(raw)


@pytest.mark.parametrize(
    "raw",
    ["chdb:///x?database=1bad", "http://h/bad-name", "chdb:///x?database=a;DROP"],
)
def test_database_must_be_an_identifier(raw):
    with pytest.raises(ConfigError, match="invalid database name"):
        StoreUrl.parse(raw)


def test_unknown_url_parameter_is_refused():
    with pytest.raises(ConfigError, match="unknown store URL parameter 'db'"):
        StoreUrl.parse("chdb:///x?db=y")


def test_bad_port_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError, match="invalid port") as info:
        StoreUrl.parse("http://u:pw@h:notaport/db")
    assert "pw@" not in str(info.value)


def test_empty_chdb_path_is_refused():
    with pytest.raises(ConfigError, match="has no path"):
        StoreUrl.parse("chdb://")
