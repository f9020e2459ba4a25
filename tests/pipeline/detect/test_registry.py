import numpy as np
import pytest

from trainguard.pipeline.detect import EntityRegistry


def ts(*values):
    return np.array(values, dtype=float)


def test_new_keys_get_consecutive_rows_and_known_keys_keep_theirs():
    reg = EntityRegistry()
    assert reg.rows_for(["n1/0", "n1/1", "n1/0"], ts(1, 1, 2)).tolist() == [0, 1, 0]
    assert reg.rows_for(["n1/1", "n2/0"], ts(3, 3)).tolist() == [1, 2]
    assert len(reg) == 3 and reg.n_rows == 3 and reg.get("n2/0") == 2


def test_keys_of_maps_rows_back_to_keys():
    reg = EntityRegistry()
    reg.rows_for(["job/0", "job/1"], ts(0, 0))
    assert reg.keys_of(np.array([1, 0])) == ["job/1", "job/0"]
    with pytest.raises(KeyError, match="row 5"):
        reg.keys_of([5])


def test_expire_frees_rows_silent_longer_than_idle_in_event_time():
    reg = EntityRegistry()
    reg.rows_for(["a", "b", "c"], ts(100, 100, 100))
    reg.rows_for(["b"], ts(150))
    assert reg.expire(now_ts=170, idle_s=60) == [0, 2]
    assert reg.get("a") is None and reg.get("b") == 1 and len(reg) == 1
    assert reg.expire(now_ts=170, idle_s=60) == []


def test_freed_rows_are_reused_lowest_first():
    reg = EntityRegistry()
    reg.rows_for(["a", "b", "c", "d"], ts(0, 0, 0, 0))
    reg.release([2, 0])
    assert reg.rows_for(["e", "f", "g"], ts(1, 1, 1)).tolist() == [0, 2, 4]


def test_last_seen_only_moves_forward():
    reg = EntityRegistry()
    reg.rows_for(["a"], ts(50))
    reg.rows_for(["a"], ts(40))  # a late point
    reg.rows_for(["a"], ts(np.nan))
    assert reg.last_seen(np.array([0])).tolist() == [50.0]


def test_state_round_trip_keeps_rows_free_list_and_times():
    reg = EntityRegistry()
    reg.rows_for(["a", "b", "c"], ts(1, 2, 3))
    reg.release([1])
    restored = EntityRegistry()
    restored.load_state(reg.state())
    assert restored.keys_of([0, 2]) == ["a", "c"] and restored.get("b") is None
    assert restored.rows_for(["d"], ts(4)).tolist() == [1]
    assert restored.last_seen(np.array([0, 2])).tolist() == [1.0, 3.0]


def test_an_empty_key_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        EntityRegistry().rows_for([""], ts(0))


def test_least_recent_picks_the_entities_seen_longest_ago_sparing_some():
    reg = EntityRegistry()
    reg.rows_for(["a", "b", "c", "d"], ts(40, 10, 30, 20))
    assert reg.least_recent(2).tolist() == [1, 3]
    assert reg.least_recent(2, spare=["b"]).tolist() == [3, 2]
    reg.release([3])
    assert reg.least_recent(10).tolist() == [1, 2, 0]  # free rows are never picked
    assert reg.least_recent(0).tolist() == []


def test_assign_hands_out_rows_in_order_and_leaves_last_seen_to_touch():
    reg = EntityRegistry()
    assert reg.assign(["a", "b", "a"]).tolist() == [0, 1, 0]
    assert np.isneginf(reg.last_seen(np.array([0, 1]))).all()  # not seen yet
    reg.touch(np.array([0, 0, 1]), ts(5, 3, np.nan))
    assert reg.last_seen(np.array([0, 1])).tolist() == [5.0, -np.inf]
