"""Experiment tracking with MLflow behind one small interface, so no stage holds ``if mlflow:`` code.

Every stage asks :func:`start` for a :class:`Tracker` and calls ``params``, ``metrics``, ``artifact``,
``tags``, ``child`` and ``end`` on it. ``tracking="none"`` (or MLflow missing) gives the no-op
``Tracker``. Structure: one MLflow run per pipeline run, a nested run per fold; a sweep is a parent
run with one child per combination and seed. Under DDP only rank 0 tracks.

Where runs go: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a local SQLite store beside the
run folders (``<root>/mlflow.db``, artefacts in ``<root>/mlartifacts``): offline, on Kaggle too.
``make ui`` opens it.

**Never lose a run to tracking.** Every MLflow call is guarded: when the server is unreachable or the
store is not writable, one warning says tracking stopped and why, the tracker becomes a no-op, and
training goes on; the files in the run folder are complete either way. Calls to a server give up
after a few seconds instead of MLflow's default minutes of retries.

The pipeline hands its run to the notebooks' kernels through two environment variables, as MLflow
itself does with ``MLFLOW_RUN_ID``: ``MAMMO_TRACKING_RUN_ID`` (the run a stage logs under) and
``MLFLOW_TRACKING_URI``.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

RUN_ID_ENV = "MAMMO_TRACKING_RUN_ID"
STOPPED_ENV = "MAMMO_TRACKING_STOPPED"  # set for the processes a tracker that stopped starts: they stay quiet
PREVIOUS_TAG = "mammo.previous_run_id"  # on a new run that replaces an earlier one (other parameters, a copied folder)
EXPERIMENT = "mammo-workbook"
CHOICES = ("mlflow", "none")
MAX_PARAM = 6000  # MLflow's limit on a parameter value's length


class Tracker:
    """The no-op tracker: what ``tracking="none"`` gives, and what a failed tracker becomes."""

    run_id: str | None = None
    uri: str | None = None
    ended: bool = False

    def params(self, values: dict, prefix: str = "") -> None:
        pass

    def metrics(self, values: dict, step: int | None = None) -> None:
        pass

    def artifact(self, path, folder: str | None = None) -> None:
        pass

    def tags(self, values: dict) -> None:
        pass

    def child(self, name: str, tags: dict | None = None) -> "Tracker":
        return Tracker()

    def end(self, status: str = "FINISHED") -> None:
        pass

    @property
    def active(self) -> bool:
        return False


def flatten(values: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys; values as MLflow stores them (strings, cut to its length limit)."""
    out = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:MAX_PARAM]
    return out


class MlflowTracker(Tracker):
    """One MLflow run, through an ``MlflowClient`` (no global active run)."""

    def __init__(self, client, run_id: str, uri: str):
        self.client, self.run_id, self.uri, self.failed = client, run_id, uri, None

    @property
    def active(self) -> bool:
        return self.failed is None

    def _guard(self, fn, *args, **kwargs):
        if self.failed is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking never stops a run
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
            print(f"WARNING: MLflow tracking stopped ({self.uri}): {self.failed}. The run goes on; its files in the "
                  f"run folder are complete", flush=True)  # one line, on the console and in the notebook
            self._close_quietly()
            return None

    def _close_quietly(self) -> None:
        """A run whose tracking stopped is marked FAILED where the store still answers: none stays RUNNING."""
        if self.client is None or self.run_id is None:
            return
        try:
            self.client.set_terminated(self.run_id, "FAILED")
        except Exception:  # noqa: BLE001 - the store is gone: nothing more to do
            pass

    def params(self, values: dict, prefix: str = "") -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(values, prefix).items()]
        for i in range(0, len(items), 90):  # MLflow takes at most 100 params per batch
            self._guard(self.client.log_batch, self.run_id, params=items[i:i + 90])

    def metrics(self, values: dict, step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in values.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
        if items:
            self._guard(self.client.log_batch, self.run_id, metrics=items)

    def artifact(self, path, folder: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._guard(self.client.log_artifacts, self.run_id, str(path), folder)
        elif path.exists():
            self._guard(self.client.log_artifact, self.run_id, str(path), folder)

    def tags(self, values: dict) -> None:
        for k, v in values.items():
            self._guard(self.client.set_tag, self.run_id, k, str(v))

    def child(self, name: str, tags: dict | None = None) -> Tracker:
        if self.failed is not None:
            return Tracker()
        run = self._guard(self.client.create_run, self._experiment(), run_name=name,
                          tags={"mlflow.parentRunId": self.run_id, **(tags or {})})
        return MlflowTracker(self.client, run.info.run_id, self.uri) if run is not None else Tracker()

    def _experiment(self) -> str:
        return self.client.get_run(self.run_id).info.experiment_id

    def end(self, status: str = "FINISHED") -> None:
        self.ended = True
        self._guard(self.client.set_terminated, self.run_id, status)


class StoppedTracker(Tracker):
    """A tracker whose store failed when the run started: a no-op that remembers why (:func:`passed_on`
    then keeps the processes it starts from trying again, each with a warning line of its own)."""

    def __init__(self, uri: str, failed: str):
        self.uri, self.failed = uri, failed


def local_store(root) -> str:
    """The local SQLite store for runs under ``root`` (created on first use)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def resolve_uri(tracking_uri: str | None, root) -> str:
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_store(root)


def _still_there(client, run_id: str) -> bool:
    """False when the run to continue was deleted (in the UI) or is not in this store: a new one is made."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False


def start(tracking: str, root, run_name: str, tracking_uri: str | None = None, run_id: str | None = None,
          parent_id: str | None = None, tags: dict | None = None, experiment: str = EXPERIMENT) -> Tracker:
    """A tracker for one run: ``run_id`` continues an existing MLflow run (a resumed training, or the
    pipeline's run handed to a notebook), else a new run is created (under ``parent_id`` when given)."""
    if tracking not in CHOICES:
        from .errors import UserError

        raise UserError(f"tracking must be one of {CHOICES}, got {tracking!r}")
    if tracking == "none" or os.environ.get(STOPPED_ENV):  # the pipeline's tracking stopped: said once, there
        return Tracker()
    try:
        from mlflow import MlflowClient
    except ImportError:
        print("WARNING: tracking='mlflow' but MLflow is not installed: nothing is tracked (pip install mlflow)")
        return Tracker()
    for name in ("mlflow", "alembic"):  # their INFO lines (database set-up) are not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=".*``noload`` loader strategy is deprecated")  # MLflow's, via SQLAlchemy
    # a server that does not answer costs seconds, not MLflow's default minutes of retries
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # two lines a run: noise in the log
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = resolve_uri(tracking_uri, root)
    probe = MlflowTracker(None, None, uri)
    tags = dict(tags or {})

    def open_run():
        client = MlflowClient(tracking_uri=uri)
        if run_id and _still_there(client, run_id):
            client.update_run(run_id, status="RUNNING")
            return MlflowTracker(client, run_id, uri)
        if run_id:
            print(f"[tracking] MLflow run {run_id} was deleted or is not in {uri}: a new run, tagged {PREVIOUS_TAG}",
                  flush=True)
            tags.update({PREVIOUS_TAG: run_id})
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            artifacts = (Path(root).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
            exp_id = client.create_experiment(experiment, artifact_location=artifacts,  # the UI opens on its runs
                                              tags={"mlflow.experimentKind": "custom_model_development"})
        else:
            exp_id = exp.experiment_id
        run_tags = {**({"mlflow.parentRunId": parent_id} if parent_id else {}), **(tags or {})}
        run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in run_tags.items()})
        return MlflowTracker(client, run.info.run_id, uri)

    return probe._guard(open_run) or StoppedTracker(uri, probe.failed)


def provenance_tags(world_size: int = 1, device: str | None = None) -> dict:
    """The tags every run carries: git commit, package version, device, world size."""
    from .provenance import provenance

    p = provenance()
    return {"git_commit": p.get("git_commit"), "git_dirty": p.get("git_dirty"),
            "mammo_workbook": p["versions"].get("mammo-workbook"), "torch": p["versions"].get("torch"),
            "device": device or "cpu", "world_size": world_size}


@contextmanager
def passed_on(tracker: Tracker):
    """While the block runs, processes started from here (notebook kernels, a sweep's pipelines) log
    under ``tracker``'s run, to its store; the environment is restored afterwards."""
    if getattr(tracker, "failed", None):  # stopped: the notebooks' kernels do not try again, each with its line
        before = os.environ.get(STOPPED_ENV)
        os.environ[STOPPED_ENV] = tracker.failed
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(STOPPED_ENV, None)
            else:
                os.environ[STOPPED_ENV] = before
        return
    if not tracker.active:
        yield
        return
    from .parallel import environment

    with environment({RUN_ID_ENV: tracker.run_id, "MLFLOW_TRACKING_URI": tracker.uri}):
        yield


@contextmanager
def ends(tracker: Tracker):
    """The block's run ends KILLED on Ctrl-C and FAILED on an error: none is left RUNNING."""
    try:
        yield
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise


@contextmanager
def parent_run(folder: Path, kind: str, settings: dict, data):
    """The tracking run of a sweep or a search (``kind``), under which the runs it makes nest; ``settings``
    are notebook 04's (tracking, tracking_uri). FINISHED when the block returns, else as :func:`ends`."""
    folder = Path(folder)
    uri = resolve_uri(settings.get("tracking_uri"), folder.parent)
    tracker = start(settings.get("tracking", "mlflow"), folder.parent, folder.name, uri,
                    tags={**provenance_tags(), "kind": kind, "data_dir": str(data)})
    try:
        with passed_on(tracker), ends(tracker):
            yield tracker
    finally:
        if not tracker.ended:
            tracker.end()
