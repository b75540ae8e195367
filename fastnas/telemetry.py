"""Training telemetry on rank 0: a periodic progress line, a JSONL metrics file, TensorBoard scalars.

The progress line shows step, epoch, loss, top-1, images/s and lr, plus GPU utilisation and
memory through pynvml on CUDA (quietly absent where there is no driver). TensorBoard is used
when the `tensorboard` package is installed; nothing else depends on it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch


class GpuMonitor:
    """Utilisation and memory of the GPU this process uses, via NVML; `read()` is None without NVML.

    NVML numbers devices in PCI order and ignores CUDA_VISIBLE_DEVICES, so the device is found by
    its UUID (torch's view of it), never by torch's index. `close()` shuts NVML down.
    """

    def __init__(self, device: torch.device):
        self.handle = None
        if device.type != "cuda":
            return
        try:
            import pynvml
        except ImportError:
            return
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:                     # no driver or no permission: run without GPU stats
            return
        try:
            self.handle = pynvml.nvmlDeviceGetHandleByUUID(nvml_uuid(torch.cuda.get_device_properties(device).uuid))
        except (pynvml.NVMLError, AttributeError, RuntimeError):
            self.close()

    def read(self) -> dict | None:
        if self.handle is None:
            return None
        try:
            util = self._nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
            mem = self._nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30
        except self._nvml.NVMLError:
            return None
        return {"gpu_util": float(util), "gpu_mem_gib": float(mem)}

    def close(self) -> None:
        if hasattr(self, "_nvml"):
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            del self._nvml
        self.handle = None


def nvml_uuid(torch_uuid) -> str:
    """torch's device UUID (a uuid.UUID-like or its string) in NVML's spelling, 'GPU-xxxxxxxx-...'."""
    text = str(torch_uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


class Telemetry:
    """Collects per-step numbers and reports them every `log_every` steps (rank 0 writes)."""

    def __init__(self, run_dir: str | Path, *, total_steps: int, log_every: int, device: torch.device,
                 enabled: bool, metrics_name: str = "metrics.jsonl"):
        self.enabled = enabled
        self.total_steps = total_steps
        self.log_every = log_every
        self.gpu = GpuMonitor(device) if enabled else None
        self.metrics = open(Path(run_dir) / metrics_name, "a") if enabled else None
        self.tb = _tensorboard(Path(run_dir) / "tb") if enabled else None
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self.t0, self.images, self.loss_sum, self.correct, self.count = now, 0, 0.0, 0.0, 0

    def update(self, step: int, epoch: int, *, loss_sum: float, correct: float, count: int, lr: float) -> None:
        """Add one step's global (all-rank) sums; print and record every `log_every` steps."""
        self.images += count
        self.loss_sum += loss_sum
        self.correct += correct
        self.count += count
        if step % self.log_every and step != self.total_steps:
            return
        now = time.perf_counter()
        record = {"step": step, "epoch": epoch, "loss": self.loss_sum / max(self.count, 1),
                  "top1": 100.0 * self.correct / max(self.count, 1),
                  "img_s": self.images / max(now - self.t0, 1e-9), "lr": lr, "time": time.time()}
        self._reset(now)
        if not self.enabled:
            return
        gpu = self.gpu.read() if self.gpu else None
        if gpu:
            record.update(gpu)
        line = (f"step {step}/{self.total_steps}  epoch {epoch}  loss {record['loss']:.4f}  "
                f"top1 {record['top1']:.2f}%  {record['img_s']:.1f} img/s  lr {lr:.4g}")
        if gpu:
            line += f"  gpu {gpu['gpu_util']:.0f}% {gpu['gpu_mem_gib']:.1f} GiB"
        print(line, flush=True)
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.tb is not None:
            for k in ("loss", "top1", "img_s", "lr"):
                self.tb.add_scalar(f"train/{k}", record[k], step)

    def close(self) -> None:
        if self.gpu is not None:
            self.gpu.close()
        if self.metrics:
            self.metrics.close()
        if self.tb is not None:
            self.tb.close()


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:                        # tensorboard not installed: scalars go to the JSONL only
        return None
    return SummaryWriter(str(folder))
