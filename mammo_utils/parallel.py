"""Process pools: local joblib workers, or joblib's Dask backend on a ``distributed`` cluster.

``scheduler``: None runs ``jobs`` local processes; ``local:N`` starts a LocalCluster of N workers
on 127.0.0.1; ``tcp://HOST:PORT`` joins a running scheduler (every worker must see the same paths).
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from .errors import UserError

log = logging.getLogger(__name__)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_jobs(jobs) -> int:
    """Worker processes for ``jobs``: -1 (or None) means every CPU; more than the CPUs is capped."""
    n = cpu_count()
    if jobs is None or int(jobs) == -1:
        return n
    jobs = int(jobs)
    if jobs < 1:
        raise UserError(f"jobs must be a positive number of processes or -1 (all {n} CPUs), got {jobs}")
    if jobs > n:
        log.warning("jobs=%d exceeds the %d CPUs of this machine; using %d", jobs, n, n)
        print(f"jobs={jobs} exceeds the {n} CPUs of this machine; using {n}")
        return n
    return jobs


@contextmanager
def dask_client(scheduler: str):
    """A ``distributed.Client`` for ``local:N`` (a LocalCluster it starts and stops) or an address."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UserError("a Dask scheduler needs the 'distributed' package: pip install 'mammo-workbook[cluster]'") from None
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"scheduler {scheduler!r}: expected local:N with N >= 1 workers")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
    elif scheduler.startswith("tcp://"):
        reachable(scheduler)
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
        try:
            yield client
        finally:
            client.close()
    else:
        raise UserError(f"scheduler must be local:N or tcp://HOST:PORT, got {scheduler!r}")


def reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, in one line, when nothing listens at a ``tcp://HOST:PORT`` address (a Dask client
    would retry for its whole timeout first)."""
    import socket

    host, _, port = address[len("tcp://"):].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except ValueError:
        raise UserError(f"scheduler {address!r}: expected tcp://HOST:PORT") from None
    except OSError as exc:
        raise UserError(f"cannot reach the Dask scheduler at {address} ({exc.strerror or exc})") from None


def map_unordered(fn, arg_tuples, jobs: int, scheduler: str | None = None, batch_size: int = 4):
    """Yield ``fn(*args)`` for every tuple, in completion order, on local processes or a Dask cluster."""
    from joblib import Parallel, delayed, parallel_config

    if scheduler is None:
        yield from Parallel(n_jobs=jobs, return_as="generator_unordered", batch_size=batch_size)(
            delayed(fn)(*a) for a in arg_tuples)
        return
    with dask_client(scheduler) as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        with parallel_config(backend="dask", wait_for_workers_timeout=60):
            yield from Parallel(n_jobs=n_workers, return_as="generator_unordered", batch_size=batch_size)(
                delayed(fn)(*a) for a in arg_tuples)


def shutdown_local_pool() -> None:
    """Stop joblib's reusable worker processes, so none outlive the run."""
    try:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True, kill_workers=True)
    except Exception as exc:  # noqa: BLE001 - shutting down is best effort; never mask the run's result
        log.debug("pool shutdown: %s", exc)
