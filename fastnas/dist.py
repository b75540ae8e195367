"""Distributed setup: the torchrun environment, the process group, and rank-0 helpers.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; plain `python -m ...` runs as world size 1
without a process group. The backend is nccl on CUDA and gloo on CPU. Multi-node uses
torchrun's own rendezvous flags (`--nnodes`, `--node_rank`, `--rdzv_endpoint`); nothing here changes.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastnas.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistEnv:
    """Read the torchrun environment, pick the device and start the process group when world size > 1."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", cuda_index(local_rank, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return DistEnv(rank, world_size, local_rank, device)


def cuda_index(local_rank: int, visible: int) -> int:
    """The CUDA device of this process. One GPU per node-local rank as torchrun starts them; where the
    scheduler gives each process only its own GPU (SLURM --gpus-per-task, a CUDA_VISIBLE_DEVICES mask)
    fewer devices are visible than local ranks, and each process uses device 0 of its own set."""
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    raise UserError(f"LOCAL_RANK {local_rank} but {visible} GPUs visible to this process: start at most {visible} "
                    f"processes per node, or give each process its own GPU (CUDA_VISIBLE_DEVICES)")


def cleanup(finished: bool = True) -> None:
    """End the process group so the process can exit cleanly.

    After a finished run: gloo's worker threads free a collective's tensors after the caller has
    moved on, and need the GIL for it; if the interpreter is already shutting down by then, the
    process aborts ("terminate called without an active exception", seen after all_gather_object).
    A barrier orders every rank's last collective before it, and a moment without the GIL lets the
    workers finish freeing before Python exits. After a failure there is no barrier: the other ranks
    may be waiting in another collective, and would wait for it until the timeout.
    """
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
        time.sleep(0.05)


@contextlib.contextmanager
def process_group():
    """`with process_group() as env:` the torchrun environment (`init_distributed`), and `cleanup`
    when the block ends: with a barrier when it finished, without one when it raised."""
    env = init_distributed()
    try:
        yield env
    except BaseException:
        cleanup(finished=False)
        raise
    cleanup()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum across ranks (a no-op in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def print0(*args, file=None, **kwargs) -> None:
    """print() on rank 0 only, flushed (torchrun interleaves the ranks' streams)."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, file=file or sys.stdout, flush=True, **kwargs)


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s `obj` on every rank (picklable objects; a no-op without a process group)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def broadcast_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every rank (once, at start-up)."""
    if dist.is_initialized():
        for t in module.state_dict().values():
            dist.broadcast(t, src)


def all_reduce_grads(params, world_size: int, bucket_bytes: int = 25 * 2**20) -> None:
    """Average the gradients that exist (the active path's) across ranks: coalesced, bucketed all_reduce.

    Parameters without a gradient (off the sampled path) are left as None, so the optimizer skips
    them. Every rank trains the same path, so every rank builds the same buckets in the same order.
    All buckets are sent asynchronously and then awaited, so they overlap one another.
    """
    if world_size == 1 or not dist.is_initialized():
        return
    grads = [p.grad for p in params if p.grad is not None]
    buckets, current, size = [], [], 0
    for g in grads:
        if current and (g.dtype != current[0].dtype or size + g.numel() * g.element_size() > bucket_bytes):
            buckets.append(current)
            current, size = [], 0
        current.append(g)
        size += g.numel() * g.element_size()
    if current:
        buckets.append(current)
    flats = [torch.cat([g.reshape(-1) for g in bucket]) for bucket in buckets]
    works = [dist.all_reduce(flat, async_op=True) for flat in flats]
    for bucket, flat, work in zip(buckets, flats, works):
        work.wait()
        flat.div_(world_size)
        offset = 0
        for g in bucket:                     # reshape(-1) read g in logical order; view(shape) restores it
            g.copy_(flat[offset:offset + g.numel()].view(g.shape))
            offset += g.numel()
