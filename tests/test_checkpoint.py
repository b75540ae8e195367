"""Checkpoints: atomic writes with the previous one kept, corrupt files, and kill -9 + resume (real SIGKILL)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastnas.checkpoint import (CheckpointError, load_checkpoint, load_latest, load_supernet, previous_path,
                                save_checkpoint)
from fastnas.config import load_config
from fastnas.spaces.mbconv_net import SuperNet

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(Path(__file__).parent))
from test_train import sub_env, tiny  # noqa: E402


def small_state(step: int) -> dict:
    cfg = load_config(None, ["space.resolution=32", "space.channels=[16,24]", "space.depths=[2,2]",
                             "space.strides=[2,2]", "space.head_channels=64", "space.num_classes=10"])
    torch.manual_seed(step)
    return {"model": SuperNet(cfg.space).state_dict(), "config": cfg.to_dict(), "step": step}


def test_save_is_atomic_keeps_previous_and_load_supernet_round_trips(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, small_state(1))
    save_checkpoint(path, small_state(2))
    assert load_checkpoint(path)["step"] == 2
    assert load_checkpoint(previous_path(path))["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt", "checkpoint.pt.prev"]  # no tmp left
    net, cfg = load_supernet(path)
    assert cfg.space.resolution == 32 and not net.training
    for k, v in small_state(2)["model"].items():
        assert torch.equal(net.state_dict()[k], v)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_is_one_clear_line_and_previous_is_used(tmp_path, damage, capsys):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, small_state(1))
    save_checkpoint(path, small_state(2))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "corrupt or truncated" in str(e.value) and "\n" not in str(e.value)
    state = load_latest(path)
    assert state["step"] == 1                                  # the previous good one
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "using the previous one" in err
    assert path.exists() and previous_path(path).exists()      # nothing deleted
    previous_path(path).unlink()
    with pytest.raises(CheckpointError):
        load_latest(path)


def test_cli_with_corrupt_checkpoint_fails_with_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = subprocess.run([PY, "-m", "fastnas.train", "--config", "configs/quickstart_imagenette.yaml",
                           "--resume", str(bad),
                           *tiny(tmp_path / "run", "train.max_steps=1")],
                          cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.startswith("fastnas: error")]
    assert len(lines) == 1 and "corrupt or truncated" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _final_weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_equals_uninterrupted_run_bitwise(tmp_path):
    """(b) SIGKILL after the first checkpoint, restart (automatic resume): final weights are bitwise equal."""
    steps = 10
    common = ["train.max_steps=%d" % steps, "train.ckpt_every=2", "train.deterministic=true",
              "space.dropout=0.2", "train.precision=bf16"]
    cmd = [PY, "-m", "fastnas.train", "--config", "configs/quickstart_imagenette.yaml"]
    kill_resume_and_compare(cmd, common, tmp_path, steps, lambda proc: proc.send_signal(signal.SIGKILL))


def kill_resume_and_compare(cmd, common, tmp_path, steps, kill) -> None:
    """Run `cmd` uninterrupted; run it again, `kill(proc)` once its first checkpoint exists, restart it
    (automatic resume): the final weights of both must be bitwise equal."""
    ref = subprocess.run(cmd + tiny(tmp_path / "ref", *common), cwd=REPO, env=sub_env(),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(cmd + tiny(run_dir, *common), cwd=REPO, env=sub_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    kill(proc)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = load_latest(run_dir / "checkpoint.pt")["step"]
    assert 0 < killed_at < steps

    resumed = subprocess.run(cmd + tiny(run_dir, *common), cwd=REPO, env=sub_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from step {killed_at}" in resumed.stdout
    a, b = _final_weights(tmp_path / "ref"), _final_weights(run_dir)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.mark.slow
def test_two_ranks_kill_9_then_resume_equals_uninterrupted_two_rank_run(tmp_path):
    """Real torchrun with 2 gloo ranks, the whole job SIGKILLed after its first checkpoint, restarted:
    the final weights equal an uninterrupted 2-rank run's, bit for bit."""
    steps = 8
    common = ["train.max_steps=%d" % steps, "train.ckpt_every=2", "train.deterministic=true",
              "train.precision=bf16", "train.batch_size=4"]
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastnas.train",
           "--config", "configs/quickstart_imagenette.yaml"]

    def kill_all(proc):                          # the launcher and both ranks (torchrun gives its
        for pid in [proc.pid, *descendants(proc.pid)]:   # workers their own sessions: no killpg)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    kill_resume_and_compare(cmd, common, tmp_path, steps, kill_all)


@pytest.mark.slow
def test_fp16_training_with_grad_scaler_resumes_its_scale(tmp_path):
    """The fp16 path (GradScaler; runs on CPU in this torch): the scaler's state is checkpointed and
    restored, so a resumed run continues with the scale it had."""
    cmd = [PY, "-m", "fastnas.train", "--config", "configs/quickstart_imagenette.yaml"]
    first = subprocess.run(cmd + tiny(tmp_path, "train.precision=fp16", "train.max_steps=2", "train.ckpt_every=1"),
                           cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "float16" in first.stdout
    state = load_latest(tmp_path / "checkpoint.pt")
    assert state["scaler"] and state["scaler"]["scale"] > 0
    state["scaler"]["scale"] = 1024.0                  # a scale only the checkpoint knows
    from fastnas.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "checkpoint.pt", state, keep_previous=False)
    second = subprocess.run(cmd + tiny(tmp_path, "train.precision=fp16", "train.max_steps=3", "train.ckpt_every=1"),
                            cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "resumed from step 2" in second.stdout, second.stderr[-2000:]
    after = load_latest(tmp_path / "checkpoint.pt")["scaler"]["scale"]
    assert after in (1024.0, 512.0)                   # continued from it (halved if that step overflowed)
