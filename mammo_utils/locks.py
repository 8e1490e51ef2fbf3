"""One writer per output folder: a second preprocessing run, pipeline or sweep on the same folder stops
at once with one line naming the process that holds it, instead of both losing each other's rows.

An advisory ``fcntl`` lock on ``<folder>/.mammo.lock``, released when the holder exits, even when it
is killed; the file says who holds it (pid, host, command, start time). A forked child (a DataLoader
worker) shares the lock's open file, which would keep the lock held after its holder was killed until
the child noticed; every forked child therefore closes its copies at once. (A killed holder's children
may still be finishing a write: the lock stands for its holder process, not for them.)
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".mammo.lock"
_held: set = set()  # the lock files this process holds: what a forked child must close
_taking = threading.Lock()  # a fork waits while a thread takes or gives back a lock (between flock and _held)


def _close_in_forked_child() -> None:
    for f in _held:
        try:
            f.close()  # the child's copy only: the parent still holds the lock
        except OSError:
            pass
    _held.clear()
    _taking.release()  # taken by the forking thread before the fork


os.register_at_fork(before=_taking.acquire, after_in_parent=_taking.release, after_in_child=_close_in_forked_child)


@contextmanager
def folder_lock(folder, what: str):
    """Hold ``folder``'s lock while ``what`` (e.g. "preprocessing") writes into it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with _taking:
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
            raise UserError(f"{folder} is in use by {holder.get('what', 'another run')} (pid {holder.get('pid', '?')} "
                            f"on {holder.get('host', '?')}, since {holder.get('since', '?')}): wait for it to finish, "
                            f"or write into another folder") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}))
        f.flush()
        _held.add(f)
    try:
        yield
    finally:
        with _taking:
            f.close()  # closing releases the lock
            _held.discard(f)
