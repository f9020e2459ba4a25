"""SdNotifier against real Unix datagram sockets, as systemd's NOTIFY_SOCKET is."""

import os
import socket
import uuid

import pytest

from trainguard.sd_notify import SdNotifier


@pytest.fixture
def listener(tmp_path):
    """A bound datagram socket standing in for systemd's; yields (address, socket)."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield str(path), sock
    sock.close()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_without_notify_socket_every_call_is_a_no_op():
    notifier = SdNotifier.from_environ({})
    assert not notifier.enabled and notifier.interval_s is None
    assert notifier.ready() is False and notifier.watchdog() is False
    assert notifier.stopping() is False and notifier.sent == 0


def test_ready_and_status_arrive_as_one_datagram_on_a_path_socket(listener):
    address, sock = listener
    notifier = SdNotifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.ready("node=n1 gpus=8")
    assert sock.recv(4096) == b"READY=1\nSTATUS=node=n1 gpus=8"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert notifier.sent == 2


def test_an_at_address_is_sent_to_the_abstract_namespace():
    name = f"trainguard-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        notifier = SdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_the_watchdog_pings_every_half_watchdog_period(listener):
    address, sock = listener
    clock = FakeClock()
    notifier = SdNotifier(address, watchdog_usec=30_000_000, clock=clock)
    assert notifier.interval_s == 15.0
    assert notifier.watchdog() is True  # the first ping goes at once
    clock.now += 14.9
    assert notifier.watchdog() is False
    clock.now += 0.1
    assert notifier.watchdog() is True
    assert [sock.recv(4096), sock.recv(4096)] == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_the_watchdog_period_is_read_from_watchdog_usec(listener):
    address, _ = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}
    assert SdNotifier.from_environ(env).interval_s == 15.0
    # systemd sets WATCHDOG_PID to the main pid; a child inheriting the variables is not it
    assert SdNotifier.from_environ({**env, "WATCHDOG_PID": str(os.getpid())}).interval_s == 15.0
    assert SdNotifier.from_environ({**env, "WATCHDOG_PID": "1"}, pid=4242).interval_s is None
    assert SdNotifier.from_environ({**env, "WATCHDOG_USEC": "junk"}).interval_s is None


def test_no_watchdog_without_watchdog_usec(listener):
    address, sock = listener
    notifier = SdNotifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.enabled and notifier.interval_s is None
    assert notifier.watchdog() is False
    sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_a_socket_that_is_gone_is_counted_not_raised(tmp_path):
    notifier = SdNotifier(str(tmp_path / "missing.sock"), watchdog_usec=1_000_000)
    assert notifier.ready() is False and notifier.watchdog() is False
    assert notifier.failed == 2 and notifier.sent == 0


def test_an_address_that_is_neither_a_path_nor_abstract_turns_notifications_off():
    notifier = SdNotifier("vsock:2:1234", watchdog_usec=1_000_000)
    assert not notifier.enabled and notifier.interval_s is None and notifier.ready() is False
