"""``edgecnn train --nproc K``: start K data-parallel ranks with torchrun (PyTorch's own launcher), standalone on
this machine. Across machines, users call ``torchrun --nnodes N --rdzv-endpoint HOST:PORT -m edgecnn train CONFIG``
themselves; the ranks behave the same."""
from __future__ import annotations

import logging
import os
import signal

from edgecnn.processes import PARENT_ENV, check_ranks
from edgecnn.train.distributed import launched_by_torchrun

__all__ = ["launch_torchrun", "launched_by_torchrun"]
log = logging.getLogger(__name__)


def launch_torchrun(nproc: int, argv: list[str]) -> tuple[int, str | None]:
    """Run ``python -m edgecnn ARGV`` as ``nproc`` ranks; returns (exit code for the command, a line to print or
    None). A rank's user error (exit 2) has been printed by that rank already."""
    import torch
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    check_ranks(nproc, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # CPU ranks share the cores: one thread each unless told
    os.environ[PARENT_ENV] = str(os.getpid())  # each rank dies with this process (processes.die_with_parent)
    # torchrun logs each failed rank at ERROR with its own format; edgecnn says what happened in one line instead
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "edgecnn", *argv])
    try:
        run(args)
    except (KeyboardInterrupt, SignalException) as exc:  # Ctrl-C or a signal to this launcher: the ranks are stopped
        signum = getattr(exc, "sigval", signal.SIGINT)
        return 128 + int(signum), "interrupted; rerun the same command to resume from the last finished epoch"
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()  # the rank that failed first: the others fail because it did
        if failure.exitcode == 2:
            return 2, None
        return 1, (f"training rank {rank} of {nproc} stopped ({_how(failure.exitcode)}); rerun the same command to "
                   "resume from the last finished epoch")
    return 0, None


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
