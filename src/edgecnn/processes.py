"""Child processes that die with their parent, and process counts that fit the machine.

edgecnn starts processes of its own (search workers, data-parallel ranks under torchrun). If the parent is killed
(kill -9, an OOM kill, a closed terminal) they must not keep running as orphans, training and writing into a run
directory nobody watches: each calls ``die_with_parent`` first, which asks Linux to send it SIGTERM when its parent
dies (``prctl(PR_SET_PDEATHSIG)``) and exits at once if the parent is already gone. ``check_process_count`` refuses
or clamps requests beyond the machine (more ranks than GPUs or cores, more search workers than cores).
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

from edgecnn.errors import EdgeCNNError

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
#: Set by edgecnn's launcher for its torchrun ranks: the pid they die with.
PARENT_ENV = "EDGECNN_PARENT_PID"


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Arrange SIGTERM for this process when its parent exits (Linux); returns whether that could be arranged. With
    ``parent_pid``, exit now if the parent is no longer the one that started us (it died before the call)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl: nobody is waiting for this process
    return True


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_ranks(nproc: int, gpus: int) -> None:
    """Data-parallel ranks: one per GPU, or one per CPU core without GPUs; more is a one-line error."""
    limit, what = (gpus, f"{gpus} GPU(s)") if gpus else (usable_cores(), f"{usable_cores()} CPU core(s) and no GPU")
    if nproc > limit:
        raise EdgeCNNError(f"--nproc {nproc}: this machine has {what}; more ranks than that only share them and "
                           f"slow training down: use --nproc {limit} or fewer")


def clamp_workers(workers: int) -> int:
    """Local search workers: at most one per CPU core (each trains with its own thread); more are clamped with a
    warning, as they would only time-share the cores and hold more memory."""
    cores = usable_cores()
    if workers > cores:
        log.warning("search.workers %d: this machine has %d CPU core(s); running %d workers", workers, cores, cores)
        return cores
    return workers
