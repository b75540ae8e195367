"""The command line as people type it: overrides anywhere, `| head`, one-line errors."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO, SAMPLE
from fastnas.cli import EXIT_BROKEN_PIPE

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
COMMANDS = ["train", "search", "export", "latency", "retrain", "space", "quickstart"]


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, **kw)


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one-step")
    return run_dir, run("fastnas.train", "train.max_steps=1", "--config", QUICKSTART, f"train.run_dir={run_dir}")


def test_train_takes_overrides_before_and_after_flags(one_step_run):
    run_dir, out = one_step_run
    assert out.returncode == 0, out.stderr
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 1                     # the override before the flags was applied


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_reads_overrides_after_its_flags(command, one_step_run):
    # An unknown section placed after the flags must reach the config (its one-line error),
    # not argparse ("unrecognized arguments"). Required flags are given so argparse is satisfied.
    checkpoint = str(one_step_run[0] / "checkpoint.pt")
    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    required = {"export": ["--arch", cell, "--supernet", checkpoint, "--out", "x"],
                "latency": ["--out", "x.json"], "retrain": ["--arch", "a.json"]}.get(command, [])
    out = run(f"fastnas.{command}", "space.resolution=32", "--config", QUICKSTART, *required, "bogus.key=1")
    assert out.returncode == 2
    assert out.stderr.strip() == "fastnas: error: unknown section 'bogus' (allowed: space, data, train, eval, search)"


def test_a_closed_pipe_ends_quietly():
    # `python -m fastnas.data check PATH | head`: the reader goes away before the report is written.
    proc = subprocess.Popen([sys.executable, "-m", "fastnas.data", "check", str(SAMPLE)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert err == ""                               # no traceback, no "Exception ignored"
