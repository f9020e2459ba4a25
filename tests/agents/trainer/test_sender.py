"""The background sender: order kept, everything queued sent by stop, inline afterwards."""

import threading

from trainguard.agents.trainer.sender import Sender


def test_items_are_sent_in_order_on_another_thread_and_stop_sends_the_rest():
    sent, threads = [], set()
    gate = threading.Event()

    def send(item):
        gate.wait(5)
        threads.add(threading.current_thread().name)
        sent.append(item)

    sender = Sender(send)
    for i in range(50):
        sender.put(i)
    gate.set()
    sender.stop()
    assert sent == list(range(50))
    assert threads == {"trainguard-send"}
    sender.put(50)  # after stop: sent here and now
    assert sent[-1] == 50 and sender.errors == 0


def test_a_failing_send_is_counted_and_the_next_items_still_go_out():
    sent = []

    def send(item):
        if item == 1:
            raise RuntimeError("boom")
        sent.append(item)

    sender = Sender(send)
    for i in range(3):
        sender.put(i)
    sender.stop()
    assert sent == [0, 2] and sender.errors == 1


def test_stop_without_any_item_starts_no_thread():
    sender = Sender(lambda item: None)
    sender.stop()
    sender.stop()
    assert sender._thread is None
