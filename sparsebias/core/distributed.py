"""Training on several processes, as torchrun starts them.

    torchrun --nproc-per-node 2 -m sparsebias compress --recipe recipes/resnet18_99.yaml
    torchrun --nnodes 2 --node-rank R --master-addr HOST --nproc-per-node 8 -m sparsebias compress ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; each process then trains a
DistributedDataParallel replica on its share of every batch (NCCL between GPUs, gloo
between CPU processes). Gradients are averaged, so weights, and the masks computed from
them, stay identical on every rank; the data-driven pruning scores are averaged with
`all_reduce_mean`. Rank 0 alone prints, checkpoints and writes the bundle. Without
torchrun, `Ranks.single()` makes all of this a no-op.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import SparsebiasError, first_line

TIMEOUT = timedelta(minutes=30)  # rank 0 may decode a data set while the others wait


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def single(cls) -> "Ranks":
        return cls()

    @classmethod
    def from_env(cls) -> "Ranks":
        """The ranks torchrun set in the environment; one process when it did not."""
        try:
            rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            local = int(os.environ.get("LOCAL_RANK", 0))
        except ValueError:
            raise SparsebiasError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
        if world < 1 or not 0 <= rank < world:
            raise SparsebiasError(f"RANK {rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE {world})")
        return cls(rank, world, local)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        """Join the process group (once): NCCL for CUDA, gloo for the CPU."""
        if not self.distributed or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, rank=self.rank, world_size=self.world, timeout=TIMEOUT,
                                    **({"device_id": device} if device.type == "cuda" else {}))
        except (RuntimeError, ValueError) as e:
            raise SparsebiasError(f"cannot join the {backend} process group as rank {self.rank} of {self.world} "
                                  f"(MASTER_ADDR {os.environ.get('MASTER_ADDR')}): {first_line(e)}") from None

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def main_first(self, work):
        """Run `work` on rank 0, then on the others, which find what it built (data sets,
        decoded images, the work folder). A failure on rank 0 fails every rank with its message."""
        if not self.distributed:
            return work()
        failure, result = [None], None
        if self.main:
            try:
                result = work()
            except Exception as e:
                failure = [str(e) if isinstance(e, SparsebiasError) else f"{type(e).__name__}: {e}"]
                dist.broadcast_object_list(failure, src=0)
                raise
        dist.broadcast_object_list(failure, src=0)
        if self.main:
            return result
        if failure[0] is not None:
            raise SparsebiasError(f"rank 0 failed: {failure[0]}")
        return work()

    def replicate(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model as each rank trains it: a DistributedDataParallel replica, or itself alone."""
        if not self.distributed:
            return model
        # a 1x1 convolution's channels_last weight has two stride layouts; DDP copies between them
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                         else None)

    def share_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics). DDP sends them at each forward
        pass, so after the last step each rank holds its own; evaluation needs rank 0's."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def lost_peer(self, error: RuntimeError) -> SparsebiasError | None:
        """The error to report when `error` is a collective that lost another process of the
        run: that process stopped first and said why, and this one is not a bug."""
        if self.distributed and (isinstance(error, dist.DistError) or any(
                sign in str(error) for sign in ("Connection closed by peer", "Connection reset by peer"))):
            return SparsebiasError(f"rank {self.rank} of {self.world}: another process of this run stopped (its "
                                   f"own message says why), so this one stops too: {first_line(error)}")
        return None

    def stop(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_mean(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The mean of each tensor over the ranks (the tensors themselves with one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    out = []
    for t in tensors:
        t = t.detach().clone()
        dist.all_reduce(t)
        out.append(t / dist.get_world_size())
    return out


def disagreeing_ranks(tensor: torch.Tensor, ranks: Ranks) -> list[int]:
    """The ranks whose `tensor` (same shape on every rank) differs from rank 0's."""
    if not ranks.distributed:
        return []
    held = [torch.empty_like(tensor) for _ in range(ranks.world)]
    dist.all_gather(held, tensor)
    return [r for r, t in enumerate(held) if not torch.equal(t, held[0])]


def gather_rows(part: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Rows r, r + world, r + 2 world, ... held by rank r -> all rows in order, on every rank."""
    if not ranks.distributed:
        return part
    total = torch.tensor([part.shape[0]], device=part.device)
    dist.all_reduce(total)
    longest = -(-int(total) // ranks.world)   # rank 0 holds the most rows
    padded = torch.zeros((longest, *part.shape[1:]), dtype=part.dtype, device=part.device)
    padded[:part.shape[0]] = part
    parts = [torch.empty_like(padded) for _ in range(ranks.world)]
    dist.all_gather(parts, padded)
    out = torch.empty((int(total), *part.shape[1:]), dtype=part.dtype, device=part.device)
    for r, held in enumerate(parts):
        rows = out[r::ranks.world]
        rows.copy_(held[:rows.shape[0]])
    return out
