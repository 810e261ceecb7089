"""The fuzz suite's own decoy: it must see a connection from the process it watches, and
only that one (another program picking its ephemeral port must not fail a fuzz run)."""

from __future__ import annotations

import os
import socket
import time

from .fuzzkit import Decoy


def _connect_and_count(decoy: Decoy) -> tuple[int, int]:
    with socket.create_connection((decoy.host, decoy.port)):
        deadline = time.monotonic() + 5
        while decoy.accepted + decoy.foreign == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the decoy's accept thread with a deadline
    return decoy.accepted, decoy.foreign


def test_a_decoy_counts_the_watched_process_and_sets_others_aside() -> None:
    watched = Decoy("127.0.0.1", suspect=os.getpid)
    other = Decoy("127.0.0.1", suspect=lambda: 1)  # pid 1 never connects here
    try:
        assert _connect_and_count(watched) == (1, 0)
        assert _connect_and_count(other) == (0, 1)
    finally:
        watched.close()
        other.close()
