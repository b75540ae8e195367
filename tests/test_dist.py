"""The process group's life: a rank that fails ends the job at once, a finished job exits cleanly."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO

WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from fastnas import dist as fd
    with fd.process_group() as env:
        dist.all_reduce(torch.ones(1))
        if env.rank == 1 and sys.argv[1] == "fail":
            raise RuntimeError("rank 1 fails alone")
        dist.all_reduce(torch.ones(1))             # rank 0 waits here for a rank that has failed
    print("rank", env.rank, "finished", flush=True)
""")


def _torchrun(tmp_path, mode: str):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), mode], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - start


@pytest.mark.slow
def test_a_rank_that_fails_ends_the_job_instead_of_waiting_for_the_timeout(tmp_path):
    proc, seconds = _torchrun(tmp_path, "fail")
    assert proc.returncode != 0 and "rank 1 fails alone" in proc.stderr
    assert seconds < 60, f"the job took {seconds:.0f} s to end (a barrier on the failure path waits for the timeout)"


@pytest.mark.slow
def test_a_finished_job_exits_cleanly(tmp_path):
    proc, _ = _torchrun(tmp_path, "ok")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("finished") == 2
