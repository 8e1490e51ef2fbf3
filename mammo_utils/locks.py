"""One writer per output folder: a second preprocessing run, pipeline or sweep on the same folder stops
at once with one line naming the process that holds it, instead of both losing each other's rows.

An advisory ``fcntl`` lock on ``<folder>/.mammo.lock``, released when the holder exits, even when it
is killed; the file says who holds it (pid, host, command, start time).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".mammo.lock"


@contextmanager
def folder_lock(folder, what: str):
    """Hold ``folder``'s lock while ``what`` (e.g. "preprocessing") writes into it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        try:
            holder = json.loads(f.read() or "{}")
        except json.JSONDecodeError:
            holder = {}
        f.close()
        raise UserError(f"{folder} is in use by {holder.get('what', 'another run')} (pid {holder.get('pid', '?')} on "
                        f"{holder.get('host', '?')}, since {holder.get('since', '?')}): wait for it to finish, or "
                        f"write into another folder") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}))
        f.flush()
        yield
    finally:
        f.close()  # closing releases the lock
