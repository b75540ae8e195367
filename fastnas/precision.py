"""One answer to "which dtype?", so that training, evaluation and latency tables agree on a machine."""
from __future__ import annotations

import torch

from fastnas.errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """'auto': bf16 where the device runs it natively (Ampere+ GPUs, AVX-512 BF16 CPUs), else fp16 on
    a GPU (with a GradScaler in training) and fp32 on a CPU; or the named one."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    if precision not in DTYPES:
        raise UserError(f"precision {precision!r} is not allowed (allowed: auto, {', '.join(DTYPES)})")
    return DTYPES[precision]
