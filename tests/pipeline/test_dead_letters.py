"""One dead-letter builder: every path that quarantines a message gives the same headers and row."""

from __future__ import annotations

from typing import Any

from tests.pipeline.alerts.test_stream import Store, _alert_events, _delivery, _job
from tests.pipeline.fakes import Clock, FakeTopic, events, raw, run
from tests.pipeline.test_batches import Topics, Writes, _handler
from tests.pipeline.test_ingest import TOPICS
from trainguard.pipeline.dead_letters import DEAD_LETTER_HEADERS, DeadLetter, RawMessage

ROW_COLUMNS = {"topic", "partition", "offset", "reason", "message", "payload_head",
               "payload_size", "ts"}


def test_headers_name_the_reason_source_and_worker() -> None:
    dead = DeadLetter(RawMessage("in", 3, 77, b"k", b"x" * 600, 5.0), "not_json", "e" * 3000)
    headers = dict(dead.headers("host:9"))
    assert list(headers) == list(DEAD_LETTER_HEADERS)
    assert headers["tg.source.partition"] == b"3" and headers["tg.source.offset"] == b"77"
    assert headers["tg.worker"] == b"host:9" and len(headers["tg.error.message"]) == 2048
    row = dead.row()
    assert set(row) == ROW_COLUMNS and row["ts"] == 5.0 and row["payload_size"] == 600
    assert len(row["payload_head"]) == 512 and len(row["message"]) == 2048


def test_row_time_falls_back_to_the_clock_without_a_message_time() -> None:
    dead = DeadLetter(RawMessage("in", 0, 1, None, None), "empty", "no value")
    assert dead.row(lambda: 12.5)["ts"] == 12.5 and dead.row()["payload_size"] == 0


def test_every_path_gives_the_same_header_names_and_row_columns() -> None:
    async def main() -> dict[str, tuple[list[str], set[str]]]:
        seen: dict[str, tuple[list[str], set[str]]] = {}

        # ingest rejects
        topics, writes = Topics(), Writes()
        handler, _ = _handler(topics, writes)
        bad = events(TOPICS.samples, [0], values=[b"nope"])
        await handler.handle(raw(bad), bad)
        seen["ingest"] = (topics.dead.header_names[0],
                          set(writes.calls[0][0]["dead_letters"][0]))
        writes.futures[0].set_result(1)

        # an undecodable finding in the alert stream
        store, dead = Store(), FakeTopic()
        await _job(store, FakeTopic(), dead, Clock()).handle(
            events("findings", [0], values=[b"nope"]))
        seen["finding"] = (dead.header_names[0], set(store.writes[0]["dead_letters"][0]))

        # an undecodable alert in the delivery stream
        store, dead = Store(), FakeTopic()
        delivery = _delivery(store, dead, [])
        await delivery.start()
        await delivery.handle(events("alerts", [0], values=[b"nope"]))
        seen["alert"] = (dead.header_names[0], set(store.writes[0]["dead_letters"][0]))

        # a delivery a receiver gave up on
        store, dead = Store(), FakeTopic()
        delivery = _delivery(store, dead, [])
        await delivery.start()
        _, batch = _alert_events([4])
        await delivery.handle(batch)
        dispatcher: Any = delivery.dispatcher
        dispatcher.on_failed(dispatcher.submitted[0][0][0], "rx", "gave up")
        await delivery.flush()
        seen["delivery"] = (dead.header_names[0], set(store.writes[0]["dead_letters"][0]))
        return seen

    seen = run(main())
    assert set(seen) == {"ingest", "finding", "alert", "delivery"}
    for path, (names, columns) in seen.items():
        assert names == list(DEAD_LETTER_HEADERS), path
        assert columns == ROW_COLUMNS, path
