"""``edgecnn train --nproc K``: start K data-parallel ranks with torchrun (PyTorch's own launcher), standalone on
this machine. Across machines, users call ``torchrun --nnodes N --rdzv-endpoint HOST:PORT -m edgecnn train CONFIG``
themselves; the ranks behave the same."""
from __future__ import annotations

import logging
import os

from edgecnn.processes import PARENT_ENV, check_ranks
from edgecnn.train.distributed import launched_by_torchrun

__all__ = ["launch_torchrun", "launched_by_torchrun"]
log = logging.getLogger(__name__)


def launch_torchrun(nproc: int, argv: list[str]) -> tuple[int, str | None]:
    """Run ``python -m edgecnn ARGV`` as ``nproc`` ranks; returns (exit code for the command, a line to print or
    None). A rank's user error (exit 2) has been printed by that rank already."""
    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    check_ranks(nproc, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # CPU ranks share the cores: one thread each unless told
    os.environ[PARENT_ENV] = str(os.getpid())  # each rank dies with this process (processes.die_with_parent)
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "edgecnn", *argv])
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items())
        if failure.exitcode == 2:
            return 2, None
        return 1, (f"training rank {rank} of {nproc} stopped (exit code {failure.exitcode}); rerun the same command "
                   "to resume from the last finished epoch")
    return 0, None
