"""Data-parallel training with torch.distributed (DDP), as started by torchrun: NCCL on GPUs, gloo on CPUs.

torchrun does the launching, rendezvous and failure handling (a rank that dies takes the others down; rerunning the
command resumes from the last finished epoch); this module only reads its environment, opens the process group and
offers the few collective steps the trainer needs so that every rank takes the same decisions (early stopping,
time limit) from the same numbers.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from edgecnn.errors import EdgeCNNError
from edgecnn.processes import PARENT_ENV, die_with_parent

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    """True in a process torchrun started as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the data-parallel group (rank 0 of 1 when training alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (float64)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return t.cpu().tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one."""
        return bool(self.sum([float(flag)])[0] > 0) if self.active else flag

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def current() -> DataParallel:
    """The group this process belongs to (opened by ``start``), or a single process."""
    if dist.is_available() and dist.is_initialized():
        return DataParallel(dist.get_rank(), dist.get_world_size())
    return DataParallel()


def start(device: torch.device) -> DataParallel:
    """Open the process group torchrun described in the environment (once); a single process gets rank 0 of 1."""
    if not launched_by_torchrun():
        return DataParallel()
    if not dist.is_available():
        raise EdgeCNNError("this torch build has no torch.distributed; train with one process (drop --nproc)")
    if not dist.is_initialized():
        parent = os.environ.get(PARENT_ENV)
        die_with_parent(int(parent) if parent and parent.isdigit() else None)  # no orphan ranks
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
        log.info("data-parallel rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return current()


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
