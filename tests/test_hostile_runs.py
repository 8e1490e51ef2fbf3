"""Run folders and schedulers as a careless user meets them: folders named like their parts, batch
schedulers on a machine that cannot submit."""
import pytest

from mammo_utils import parallel
from mammo_utils.errors import UserError


@pytest.mark.parametrize("kind, submit", [("slurm", "sbatch"), ("pbs", "qsub")])
def test_a_batch_scheduler_without_its_submit_command_stops_in_one_line(tmp_path, monkeypatch, kind, submit):
    """Without sbatch (qsub) the cluster object is made, no job is ever submitted and the fold tasks wait
    for workers forever: refused before any work, naming the command."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match=f"{kind}: scheduler submits its workers with {submit}, which is not on PATH"):
        parallel.check_scheduler(f"{kind}:")
    fake = tmp_path / submit
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    parallel.check_scheduler(f"{kind}:")  # a login node: accepted
