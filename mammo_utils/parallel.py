"""Process pools: local joblib workers, or joblib's Dask backend on a ``distributed`` cluster.

``scheduler``: None runs ``jobs`` local processes; ``local:N`` starts a LocalCluster of N workers
on 127.0.0.1; ``tcp://HOST:PORT`` joins a running scheduler (every worker must see the same paths).

Training work (folds, sweep runs, search trials) goes through the same engine: :func:`training_client`
adds ``slurm:`` and ``pbs:`` (dask-jobqueue, the job's resources in one :class:`JobResources`) and one
task per GPU; :func:`run_tasks` submits tasks that survive a lost worker and shows one bar for all.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

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
def dask_client(scheduler: str, resources: dict | None = None):
    """A ``distributed.Client`` for ``local:N`` (a LocalCluster it starts and stops; each worker offering
    ``resources``) or an address."""
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
        import dask

        # not daemonic: a training task starts DataLoader processes; read again whenever a nanny restarts a worker
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, resources=resources)
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


# ---- training work on a cluster: one engine for local:N, tcp://HOST:PORT, slurm: and pbs: --------------

@dataclass
class JobResources:
    """What each batch job (one Dask worker) asks a SLURM or PBS cluster for, written once in a YAML file
    (``slurm:job.yaml``). One worker per job; with ``gpus`` it advertises that many ``GPU`` resources and
    runs one task per GPU (a task asking for several GPUs runs DDP inside itself)."""

    cores: int = 4                  # CPUs of the job: DataLoader workers and the training process
    memory: str = "16GiB"           # memory of the job
    gpus: int = 0                   # GPUs of the job (SLURM --gpus, PBS ngpus)
    walltime: str = "04:00:00"      # a job ends at its walltime; its tasks are rerun elsewhere and resume
    queue: str | None = None        # SLURM partition / PBS queue; None: the cluster's default
    account: str | None = None      # project to charge; None: the user's default
    jobs: int = 1                   # jobs (workers) to start
    python: str | None = None       # the environment's python on the nodes; None: the one running now

    def __post_init__(self):
        for name in ("cores", "jobs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"job resources: {name} must be a whole number >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise UserError(f"job resources: gpus must be a whole number >= 0, got {self.gpus!r}")


def read_resources(path) -> JobResources:
    """A job-resources YAML file (the keys of :class:`JobResources`), checked: one line names a bad key."""
    import yaml
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise UserError(f"job resources file {path} not found")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"job resources file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    known = set(JobResources.__dataclass_fields__)
    if not isinstance(spec, dict) or set(spec) - known:
        raise UserError(f"job resources file {path}: unknown key(s) {sorted(set(spec) - known) if isinstance(spec, dict) else spec!r}; "
                        f"known: {sorted(known)}")
    return JobResources(**spec)


def jobqueue_cluster(kind: str, res: JobResources):
    """A dask-jobqueue ``SLURMCluster`` or ``PBSCluster`` whose job script asks for ``res``: one worker
    process per job, one thread per GPU (or one), ``--resources GPU=n`` so GPU tasks go one per GPU."""
    try:
        import dask_jobqueue
    except ImportError:
        raise UserError(f"a {kind}: scheduler needs dask-jobqueue: pip install 'mammo-workbook[cluster]'") from None
    from dask.utils import parse_bytes

    common = dict(cores=max(1, res.gpus), processes=1, memory=res.memory, walltime=res.walltime, queue=res.queue,
                  account=res.account, python=res.python or sys.executable, scheduler_options={"dashboard_address": None},
                  worker_extra_args=["--resources", f"GPU={res.gpus}"] if res.gpus else [],
                  job_script_prologue=[f"export {NOT_DAEMON}"])
    if kind == "slurm":
        return dask_jobqueue.SLURMCluster(job_cpu=res.cores, **common,
                                          job_extra_directives=[f"--gpus={res.gpus}"] if res.gpus else [])
    gib = max(1, parse_bytes(res.memory) // 2**30)
    spec = f"select=1:ncpus={res.cores}:mem={gib}GB" + (f":ngpus={res.gpus}" if res.gpus else "")
    return dask_jobqueue.PBSCluster(resource_spec=spec, **common)


def visible_gpus() -> list[str]:
    """The GPUs this machine lets us use (``CUDA_VISIBLE_DEVICES``, else every CUDA device)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


class PinGPU:
    """A worker plugin: local worker ``i`` sees GPU ``i mod n`` only (``CUDA_VISIBLE_DEVICES``), set before
    any task of the worker touches CUDA, so N local workers on N GPUs train one task per GPU."""

    def __init__(self, gpus: list[str]):
        self.gpus = list(gpus)

    def setup(self, worker):
        try:
            i = int(str(worker.name).rsplit("-", 1)[-1])
        except ValueError:
            i = 0
        os.environ["CUDA_VISIBLE_DEVICES"] = self.gpus[i % len(self.gpus)]


SUBMIT = {"slurm": "sbatch", "pbs": "qsub"}  # the command that submits a batch job


def check_scheduler(scheduler: str) -> None:
    """Refuse a malformed or unreachable scheduler, or a missing job-resources file, before any work starts."""
    kind, _, spec = str(scheduler).partition(":")
    if kind == "local" and spec.isdigit() and int(spec) >= 1:
        return
    if kind == "tcp" and spec.startswith("//"):  # nobody listening: said now, not after the notebooks before 04
        reachable(scheduler)
        return
    if kind in ("slurm", "pbs"):
        if spec:
            read_resources(spec)
        submit = SUBMIT[kind]
        if shutil.which(submit) is None:  # else the jobs are never submitted and the tasks wait for workers forever
            raise UserError(f"a {kind}: scheduler submits its workers with {submit}, which is not on PATH here: run "
                            f"the command on the cluster's login node (mammo job-script --scheduler {scheduler} prints "
                            f"the job script)")
        return
    raise UserError(f"scheduler must be local:N, tcp://HOST:PORT, slurm:[job.yaml] or pbs:[job.yaml], got {scheduler!r}")


@contextmanager
def training_client(scheduler: str):
    """A Dask client for training tasks. ``local:N`` and ``tcp://`` as :func:`dask_client`; on a machine
    with GPUs each local worker holds one (a ``GPU`` resource and its own ``CUDA_VISIBLE_DEVICES``).
    ``slurm:`` / ``pbs:`` (optionally ``slurm:job.yaml``, see :class:`JobResources`) submit batch jobs
    through dask-jobqueue; every node must see the data and run folders at the same paths."""
    check_scheduler(scheduler)
    kind, _, spec = scheduler.partition(":")
    if kind in ("slurm", "pbs"):
        from distributed import Client

        res = read_resources(spec) if spec else JobResources()
        cluster = jobqueue_cluster(kind, res)
        cluster.scale(jobs=res.jobs)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    gpus = visible_gpus() if kind == "local" else []
    with dask_client(scheduler, resources={"GPU": 1} if gpus else None) as client:
        if gpus:
            client.register_plugin(PinGPU(gpus), name="pin-gpu")
        yield client


@dataclass
class Task:
    """One unit of work for :func:`run_tasks`: ``fn(*args, **kwargs)`` with ``env`` set while it runs
    (the environment of a worker started elsewhere is not ours: e.g. the tracking run to nest under)."""

    name: str
    fn: object
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)


NOT_DAEMON = "DASK_DISTRIBUTED__WORKER__DAEMON=False"  # workers whose tasks may start processes (DataLoader workers)


def call_task(task: Task):
    """Run a task on a worker with its environment, restored afterwards (workers outlive tasks)."""
    with environment({k: str(v) for k, v in task.env.items()}):
        try:
            return task.fn(*task.args, **task.kwargs)
        except AssertionError as exc:
            if "daemonic processes" in str(exc):
                raise UserError(f"the Dask worker running {task.name} is a daemonic process, which cannot start "
                                f"DataLoader workers: start the workers with {NOT_DAEMON} in their environment (or "
                                "workers=0)") from None
            raise



@contextmanager
def environment(values: dict):
    """Set environment variables for the duration of a block (what child processes and tasks inherit), then
    put back what was there before, unset ones included."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cluster_gpus(client) -> int:
    """The most ``GPU`` resources one worker advertises (0: a CPU cluster, where tasks ask for none; asking
    for more than any worker has would wait forever)."""
    return max([w.get("resources", {}).get("GPU", 0) for w in client.scheduler_info().get("workers", {}).values()],
               default=0)


def run_tasks(client, tasks: list[Task], desc: str = "tasks", retries: int = 1, gpus_per_task: int = 0,
              progress: bool = True) -> tuple[dict, dict]:
    """Run every task on the cluster and wait for all of them: ``({name: result}, {name: why it failed})``.

    Submitted with ``pure=False`` (each runs, even when an identical call ran before) and ``retries``: a task
    that raises runs again; a task whose worker dies is rerun on another worker by the scheduler (up to
    ``distributed.scheduler.allowed-failures`` times). Tasks must therefore resume, not start over. Each
    result is fetched and released as soon as it is done, so a worker lost later never makes the scheduler
    recompute a finished task. One bar: tasks done, running and failed, with an ETA."""
    import uuid

    from distributed import wait

    from .progress import bar as progress_bar

    most = cluster_gpus(client)
    if most and gpus_per_task > most:
        raise UserError(f"each task needs {gpus_per_task} GPUs but no worker has more than {most}: start workers "
                        f"with --resources GPU={gpus_per_task} (a job with gpus: {gpus_per_task}), or train with gpus=1")
    resources = {"GPU": gpus_per_task} if gpus_per_task and most else None
    futures = {}
    for t in tasks:
        key = f"{re.sub(r'[^A-Za-z0-9_.=-]+', '-', t.name)}-{uuid.uuid4().hex[:8]}"
        futures[client.submit(call_task, t, key=key, pure=False, retries=retries, resources=resources)] = t.name
    results, failures, pending = {}, {}, set(futures)
    bar = progress_bar(total=len(tasks), desc=desc, unit="task", disable=not progress)
    bar.set_postfix_str("running 0, failed 0", refresh=False)
    try:
        while pending:
            try:
                done = wait(pending, timeout=2, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                done = set()
            for f in done:
                name = futures.pop(f)
                if f.status == "finished":
                    results[name] = f.result()
                else:
                    exc = f.exception()
                    failures[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else 'no detail'}"
                    bar.write(f"FAILED {name}: {failures[name]}")
                f.release()
                bar.update()
            pending -= done
            bar.set_postfix_str(f"running {running(client, {f.key for f in pending})}, failed {len(failures)}",
                                refresh=True)
    finally:
        bar.close()
        for f in pending:  # interrupted: nothing left running for nobody
            f.cancel()
    return results, failures


def running(client, keys: set) -> int:
    """How many of ``keys`` a worker is executing now (at most one per worker thread)."""
    try:
        busy = client.processing()
        threads = {a: w.get("nthreads", 1) for a, w in client.scheduler_info().get("workers", {}).items()}
    except Exception:  # noqa: BLE001 - a count for the bar; never a reason to stop
        return 0
    return sum(min(len([k for k in ks if k in keys]), threads.get(a, 1)) for a, ks in busy.items())


def failure_lines(failures: dict) -> str:
    """Failed tasks, one per line, for the message that names them."""
    return "\n".join(f"  {name}: {why}" for name, why in sorted(failures.items()))
