"""The fencing program of the end-to-end test: force-stop the old active by its pid file.

    python fencing_stop.py PIDFILE RECORD

What an ``exec`` fencing step does on a real site with ssh/ipmitool, done here to a
local process: SIGKILL the pid written in PIDFILE, then confirm it is dead (gone, or a
zombie its parent has not reaped yet: it runs no code and its sockets are closed)
within 5 s. Writes ``{"pid", "dead_monotonic", "dead_wall"}`` to RECORD once confirmed.

Exit status: 0 when the process is confirmed dead (including: it was already gone);
1 when the pid file cannot be read (the "power switch is unreachable" case) or the
process is still alive after 5 s.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def main() -> int:
    pidfile, record = sys.argv[1], sys.argv[2]
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError) as exc:
        print(f"fence: cannot read the old active's pid from {pidfile}: {exc}", flush=True)
        return 1
    try:
        os.kill(pid, signal.SIGKILL)
        print(f"fence: SIGKILL sent to {pid}", flush=True)
    except ProcessLookupError:
        print(f"fence: {pid} was already gone", flush=True)
    deadline = time.monotonic() + 5.0
    while not dead(pid):
        if time.monotonic() > deadline:
            print(f"fence: {pid} still alive 5s after SIGKILL", flush=True)
            return 1
        time.sleep(0.01)  # the fence program's own polling, under a deadline
    Path(record).write_text(
        json.dumps({"pid": pid, "dead_monotonic": time.monotonic(), "dead_wall": time.time()})
    )
    print(f"fence: {pid} is dead", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
