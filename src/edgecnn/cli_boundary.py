"""The CLI's error boundary: whatever a command raises ends as one line on stderr (exit 2 for user errors and full
or unwritable disks, 130 for an interrupt, 1 for a bug, whose traceback goes to a file or, with --debug, to stderr)."""
from __future__ import annotations

import errno
import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from edgecnn.errors import EdgeCNNError

RUN_DIR = "edgecnn.run_dir"  # ctx.meta key: the command's run directory, where a crash saves its traceback
_STORAGE = {errno.ENOSPC: "no space left on the device", getattr(errno, "EDQUOT", -1): "disk quota exceeded",
            errno.EFBIG: "file too large for the file system or the process's file-size limit",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
_OUTPUT_FLAGS = {"run": "--output", "train": "the config's output", "export": "--out", "quantize": "--out-dir",
                 "prune": "--out-dir", "distill": "--out-dir", "bench": "--json/--plot", "estimate": "--json/--plot"}


class GuardedGroup(TyperGroup):
    """The CLI's one error boundary: whatever a command raises ends as one line on stderr; exit code 2 for user errors
    and full or unwritable disks, 130 for an interrupt, 1 for anything unexpected (a bug: its traceback goes to a
    file, or to stderr with `edgecnn --debug`)."""

    # typer hands its own Context, a subclass of the click Context it vendors (the one TyperGroup.invoke names)
    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # typer's own exits and usage errors
            raise
        except KeyboardInterrupt:
            say("interrupted; rerun the same command to resume")
            raise typer.Exit(130) from None
        except EdgeCNNError as exc:  # raised outside a command's own try (printing, --json, --plot)
            fail(exc)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # output piped into e.g. `head`: typer exits quietly
                raise
            if exc.errno not in _STORAGE:
                _internal_error(ctx, exc)
            fail(_storage_error(exc, ctx.invoked_subcommand))
        except Exception as exc:
            _internal_error(ctx, exc)


def say(text: str, prefix: str = "") -> None:
    """One line on stderr (rich markup in ``text`` is printed as is)."""
    Console(stderr=True).print(f"{prefix}{escape(text)}", highlight=False, soft_wrap=True)


def fail(exc: EdgeCNNError) -> NoReturn:
    """The one line of a user error (exit 2); under torchrun only rank 0 prints it, so K ranks give one line."""
    if os.environ.get("RANK", "0") == "0":
        say(str(exc), "[bold red]error:[/] ")
    raise typer.Exit(2)


def _storage_error(exc: OSError, command: Optional[str]) -> EdgeCNNError:
    """A full disk or an unwritable place as a user error naming the file."""
    target = exc.filename if isinstance(exc.filename, (str, os.PathLike)) else _file_being_written(exc) or "a file"
    flag = f" ({_OUTPUT_FLAGS[command]})" if command in _OUTPUT_FLAGS else ""
    fix = "free some space" if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) else \
        "raise the file-size limit (ulimit -f) or write elsewhere" if exc.errno == errno.EFBIG else \
        f"choose a writable place{flag} or make it writable"
    return EdgeCNNError(f"{_STORAGE[exc.errno]} writing {target}; {fix}, then rerun the same command to resume "
                        "(finished work is kept)")


def _file_being_written(exc: OSError) -> Optional[str]:
    """A failed write() names no file: the file open for writing in the innermost frame that holds one."""
    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        for value in frame.f_locals.values():
            name = getattr(value, "name", None)
            if isinstance(value, io.IOBase) and isinstance(name, str) \
                    and any(m in getattr(value, "mode", "") for m in "wax+"):
                return name
    return None


def _internal_error(ctx: typer.Context, exc: Exception) -> NoReturn:
    """An unexpected exception (a bug): its traceback saved in the command's run directory (or the temp folder), one
    line naming it and the file; exit code 1. With --debug the traceback is printed instead."""
    text = traceback.format_exc()
    if ctx.params.get("debug"):
        sys.stderr.write(text)
        raise typer.Exit(1)
    run_dir, stamp = ctx.meta.get(RUN_DIR), time.strftime("%Y%m%d-%H%M%S")
    places = [run_dir / f"edgecnn-traceback-{stamp}-{os.getpid()}.txt"] if run_dir and run_dir.is_dir() else []
    saved = "the traceback could not be saved"
    for path in places + [Path(tempfile.gettempdir()) / f"edgecnn-traceback-{os.getpid()}.txt"]:
        try:
            path.write_text(f"edgecnn {ctx.invoked_subcommand} failed at {time.ctime()}\n\n{text}")
            saved = f"the full traceback is in {path}"
            break
        except OSError:
            continue
    detail = " ".join(str(exc).split())
    detail = type(exc).__name__ + (f": {detail[:300]}{'...' * (len(detail) > 300)}" if detail else "")
    say(f"internal error ({detail}); {saved}; rerun with --debug (edgecnn --debug {ctx.invoked_subcommand} ...) to "
         "print it", "[bold red]error:[/] ")
    raise typer.Exit(1)
