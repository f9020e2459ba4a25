"""What reading each step datagram's sender credentials costs, on both ends of the socket.

A 600-byte datagram over a Unix datagram socket, sent and received in one process (the
receive is the loop of ``StepIntake._run``): the sender's ``send`` and the receiver's
``recvmsg_into``, with and without ``SO_PASSCRED`` on the receiving socket (with it, the
kernel attaches the sender's pid/uid/gid and the receiver parses them). Prints medians of
the per-round means.

    python -m bench.credentials --sends 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time

from trainguard.agents.claims import CREDENTIALS_SPACE, peer_credentials

_PAYLOAD = b"x" * 600


def measure(passcred: bool, sends: int, rounds: int) -> tuple[float, float]:
    """Median µs per ``send`` and per ``recvmsg_into`` (+ parse), over ``rounds``."""
    path = os.path.join(tempfile.mkdtemp(dir="/tmp"), "s.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if passcred:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    rx.bind(path)
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx.connect(path)
    buf = bytearray(65536)
    space = CREDENTIALS_SPACE if passcred else 0
    send_us, recv_us = [], []
    try:
        for _ in range(rounds):
            sent = received = 0
            for _ in range(sends):
                t0 = time.perf_counter_ns()
                tx.send(_PAYLOAD)
                t1 = time.perf_counter_ns()
                _, anc, _, _ = rx.recvmsg_into([buf], space)
                if passcred:
                    peer_credentials(anc)
                sent += t1 - t0
                received += time.perf_counter_ns() - t1
            send_us.append(sent / sends / 1000)
            recv_us.append(received / sends / 1000)
    finally:
        rx.close()
        tx.close()
        os.unlink(path)
    return statistics.median(send_us), statistics.median(recv_us)


def main() -> None:
    """Print the costs without and with ``SO_PASSCRED``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sends", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    for passcred in (False, True):
        send, recv = measure(passcred, args.sends, args.rounds)
        print(f"SO_PASSCRED={'on ' if passcred else 'off'}  send {send:.2f} µs  "
              f"recvmsg_into{' + parse' if passcred else ''} {recv:.2f} µs")


if __name__ == "__main__":
    main()
