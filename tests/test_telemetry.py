"""GPU telemetry: NVML finds the process's GPU by UUID; without a driver it is quietly absent."""
from __future__ import annotations

import uuid

import torch

from fastnas.telemetry import GpuMonitor, nvml_uuid


def test_torch_uuid_in_nvml_spelling():
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert nvml_uuid(u) == "GPU-12345678-1234-5678-1234-567812345678"
    assert nvml_uuid("GPU-abc") == "GPU-abc" and nvml_uuid("MIG-abc") == "MIG-abc"


def test_monitor_without_a_gpu_reads_nothing_and_closes():
    for device in (torch.device("cpu"), torch.device("cuda", 0)):   # here: no driver, nvmlInit fails
        if device.type == "cuda" and torch.cuda.is_available():
            continue
        monitor = GpuMonitor(device)
        assert monitor.read() is None
        monitor.close()
        monitor.close()                                                # idempotent
