from datetime import UTC, datetime

import pytest

from trainguard.errors import StoreError
from trainguard.pipeline.store import ChdbStore

_TABLE = (
    "CREATE TABLE {database}.t (k UInt32, name String, ts DateTime64(3, 'UTC'), "
    "x Nullable(Float64), tags Array(UInt16), ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = ReplacingMergeTree(ingested_at) ORDER BY k"
)


def test_inserted_rows_come_back_with_json_values(chdb_store):
    chdb_store.command(_TABLE)
    chdb_store.insert_rows("t", [
        {"k": 1, "name": "a", "ts": 1700000000.25, "x": None, "tags": [1, 2]},
        {"k": 2, "name": "b", "ts": datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
         "x": 1.5, "tags": []},
    ])
    result = chdb_store.query("SELECT k, name, ts, x, tags FROM {database}.t ORDER BY k")
    assert result.columns == ["k", "name", "ts", "x", "tags"]
    assert result.rows == [
        (1, "a", "2023-11-14 22:13:20.250", None, [1, 2]),
        (2, "b", "2024-01-02 03:04:05.678", 1.5, []),
    ]


def test_a_reinserted_row_is_counted_once_with_final(chdb_store):
    chdb_store.command(_TABLE)
    chdb_store.command("SYSTEM STOP MERGES {database}.t")  # keep both parts until FINAL
    row = {"k": 7, "name": "dup", "ts": 1700000000.0, "tags": []}
    chdb_store.insert_rows("t", [row])
    chdb_store.insert_rows("t", [row])
    assert chdb_store.query("SELECT count() FROM {database}.t").scalar() == 2
    assert chdb_store.query("SELECT count() FROM {database}.t FINAL").scalar() == 1


def test_copies_within_one_insert_are_left_to_the_merges_on_every_insert_path(chdb_store):
    # optimize_on_insert is off (an extra pass over every insert): a copy within a block
    # stays until a merge or FINAL collapses it, as one across two blocks does.
    import pyarrow as pa

    chdb_store.command(_TABLE)
    chdb_store.command("SYSTEM STOP MERGES {database}.t")
    row = {"k": 7, "name": "dup", "ts": 1700000000.0, "tags": []}
    chdb_store.insert_rows("t", [row, row])  # JSON lines
    block = pa.table({"k": pa.array([8, 8], pa.uint32()), "name": ["a", "a"],
                      "ts": [1.7e9, 1.7e9]})
    chdb_store.insert_arrow("t", block)  # an Arrow file in the block directory
    shared = chdb_store._shared
    files, shared.files = shared.files, None
    try:
        chdb_store.insert_arrow("t", block.set_column(0, "k", pa.array([9, 9], pa.uint32())))
    finally:
        shared.files = files  # Python(): the path without a block directory
    counts = "SELECT k, count() FROM {database}.t{final} GROUP BY k ORDER BY k"
    assert chdb_store.query(counts.replace("{final}", "")).rows == [(7, 2), (8, 2), (9, 2)]
    assert chdb_store.query(counts.replace("{final}", " FINAL")).rows == [(7, 1), (8, 1), (9, 1)]


def test_bad_sql_raises_store_error_quoting_the_sql(chdb_store):
    with pytest.raises(StoreError, match="SELEC 1"):
        chdb_store.query("SELEC 1")


def test_unknown_table_raises_store_error(chdb_store):
    with pytest.raises(StoreError, match="UNKNOWN_TABLE"):
        chdb_store.insert_rows("missing", [{"a": 1}])


def test_only_the_database_token_is_replaced_other_braces_survive(chdb_store):
    result = chdb_store.query(
        "SELECT '{database}' AS db, '{x}' AS braces, format('{}-{}', 'a', 'b') AS f"
    )
    assert result.rows == [(chdb_store.database, "{x}", "a-b")]


def test_column_names_must_be_identifiers(chdb_store):
    chdb_store.command(_TABLE)
    with pytest.raises(StoreError, match="invalid column name 'k; DROP'"):
        chdb_store.insert_rows("t", [{"k; DROP": 1}])


def test_two_stores_on_one_path_share_the_connection_until_the_last_closes(chdb_store):
    other = ChdbStore(chdb_store.path, chdb_store.database)
    other.close()
    assert chdb_store.query("SELECT 1").scalar() == 1


def test_a_closed_store_refuses_queries(chdb_store):
    chdb_store.close()
    with pytest.raises(StoreError, match="is closed"):
        chdb_store.query("SELECT 1")


def test_a_second_directory_in_one_process_is_refused_clearly(chdb_store, tmp_path):
    with pytest.raises(StoreError, match="chdb allows one directory per process"):
        ChdbStore(tmp_path / "other", "x")


def test_scalar_of_an_empty_result_raises(chdb_store):
    with pytest.raises(StoreError, match="expected one value, got 0 rows"):
        chdb_store.query("SELECT 1 WHERE 0").scalar()


def test_several_statements_in_one_call_are_refused(chdb_store):
    chdb_store.command(_TABLE)
    with pytest.raises(StoreError, match="one statement per call, got 2"):
        chdb_store.query("SELECT 1; DROP TABLE {database}.t")
    assert chdb_store.query("EXISTS TABLE {database}.t").scalar() == 1


def _step_line(offset: int, ts: float) -> bytes:
    return (b'{"_tg_partition":0,"_tg_offset":%d,"kind":"step_batch","cluster":"c","steps":'
            b'[{"job_id":"j","rank":0,"world_size":1,"node":"n","step":%d,"ts":%r,'
            b'"nonfinite":[]}]}' % (offset, offset, ts))


def test_an_insert_over_the_partition_limit_raises_instead_of_vanishing(chdb_store):
    from trainguard.pipeline.store import migrate
    from trainguard.pipeline.store.errors import StoreDataError

    migrate(chdb_store)
    month = 32 * 86400.0
    lines = [_step_line(i, 1.5e9 + i * month) for i in range(101)]  # 101 distinct months
    with pytest.raises(StoreDataError, match="Too many partitions"):
        chdb_store.insert_json_lines("step_batches_in", lines)
    chdb_store.insert_json_lines("step_batches_in", lines[:100])  # at the limit: stored
    assert chdb_store.query("SELECT count() FROM {database}.steps").scalar() == 100


def test_a_value_the_column_cannot_take_is_a_store_data_error(chdb_store):
    from trainguard.pipeline.store.errors import StoreDataError

    chdb_store.command(_TABLE)
    with pytest.raises(StoreDataError):
        chdb_store.insert_rows("t", [{"k": "not a number", "name": "a", "ts": 1.7e9}])
    chdb_store.insert_rows("t", [{"k": 1, "name": "a", "ts": 1.7e9}])  # the store is fine
    assert chdb_store.query("SELECT count() FROM {database}.t").scalar() == 1


def _steps_arrow(n: int, month: float):
    import pyarrow as pa

    return pa.table({"job_id": ["j"] * n, "step": pa.array(range(n), pa.uint64()),
                     "rank": pa.array([0] * n, pa.uint32()),
                     "world_size": pa.array([1] * n, pa.uint32()), "node": ["n"] * n,
                     "ts": [1.5e9 + i * month for i in range(n)]})


def test_an_arrow_insert_over_the_partition_limit_raises_instead_of_vanishing(chdb_store):
    # The streaming insert reported these 101 rows written and stored none; the query
    # path the store takes raises, with no system.errors read.
    from trainguard.pipeline.store import migrate
    from trainguard.pipeline.store.errors import StoreDataError

    migrate(chdb_store)
    month = 32 * 86400.0
    with pytest.raises(StoreDataError, match="Too many partitions"):
        chdb_store.insert_arrow("steps", _steps_arrow(101, month))
    assert chdb_store.query("SELECT count() FROM {database}.steps").scalar() == 0
    chdb_store.insert_arrow("steps", _steps_arrow(100, month))  # at the limit: stored
    assert chdb_store.query("SELECT count() FROM {database}.steps").scalar() == 100


def test_an_arrow_insert_names_its_columns_and_leaves_the_rest_to_defaults(chdb_store):
    chdb_store.command(_TABLE)
    import pyarrow as pa

    chdb_store.insert_arrow("t", pa.table({"name": ["a", "b"], "k": pa.array([2, 1], pa.uint32()),
                                           "ts": [1.7e9, 1.7e9 + 0.25]}))
    rows = chdb_store.query("SELECT k, name, ts, x, tags FROM {database}.t ORDER BY k").rows
    assert rows == [(1, "b", "2023-11-14 22:13:20.250", None, []),
                    (2, "a", "2023-11-14 22:13:20.000", None, [])]
    with pytest.raises(StoreError, match="invalid column name"):
        chdb_store.insert_arrow("t", pa.table({"k; DROP": [1]}))
