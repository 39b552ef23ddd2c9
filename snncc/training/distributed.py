"""Data-parallel helpers (torchrun / DDP with gloo on CPU): who this process is, and its shard of a batch."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from torch import distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_setup() -> Dist:
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), False)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ:
        dist.init_process_group("gloo")
        return Dist(dist.get_rank(), dist.get_world_size(), True)
    return Dist()


def shard(idx: np.ndarray, d: Dist) -> np.ndarray:
    return np.array_split(idx, d.world)[d.rank] if d.world > 1 else idx


def sync_buffers(module, d: Dist) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). DDP broadcasts them at the start of each
    training forward, but that forward then updates each rank's copy from its own shard, so after the last step
    the ranks differ; a sharded evaluation must score the one model that rank 0 saves."""
    if d.world > 1:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)
