"""Data parallelism on torch.distributed, as torchrun starts it.

Under ``torchrun`` every process (rank) trains a replica; a trial's batch is the *global* batch,
every rank takes an equal slice of it from the same (seed, epoch) draws, gradients are averaged by
DistributedDataParallel, evaluation is sharded and summed. Without torchrun there is one process
and no process group: ``World.single()``, and every helper here is a no-op.

Backends: NCCL on CUDA (one GPU per local rank), gloo on CPU.
"""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    nodes: int
    backend: str | None  # None: a single process, no process group

    @staticmethod
    def single() -> "World":
        return World(rank=0, size=1, local_rank=0, nodes=1, backend=None)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("WORLD_SIZE" in os.environ and "RANK" in os.environ)


def init(device_type: str, timeout_s: float = 300) -> World:
    """Joins torchrun's process group (once per process), or the single-process world."""
    if not launched_by_torchrun():
        return World.single()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        # A bounded timeout: a rank that died leaves the others failing a collective with an error
        # instead of waiting for ever (torchrun also ends the job when a worker exits).
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    size = dist.get_world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    return World(rank=dist.get_rank(), size=size, local_rank=local_rank, nodes=max(1, size // max(1, local)),
                 backend=backend)


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Every rank arrives before any goes on (the training clock starts and stops here)."""
    if active():
        dist.barrier()


def sum_(*tensors: torch.Tensor) -> None:
    """In-place sum over the ranks of each tensor (evaluation counts, losses)."""
    if active():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def max_(value: float) -> float:
    """The largest ``value`` over the ranks (the slowest rank's clock)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (env.json's per-rank devices)."""
    if not active():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


def size() -> int:
    return dist.get_world_size() if active() else 1


def broadcast(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (the run folder rank 0 made)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's BatchNorm running statistics on every rank, so every shard of an evaluation sees
    the same model (with per-replica BatchNorm each rank's statistics drift by its own batches)."""
    if active():
        for b in module.buffers():
            dist.broadcast(b, src=0)
