"""Silence for native libraries (TensorFlow, LiteRT) that write banners and logs straight to file descriptor 2,
past Python's ``sys.stderr``: edgecnn logs its own one-line summary instead."""
from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def silenced_output(env: dict[str, str] | None = None) -> Iterator[None]:
    """stdout and stderr, Python's and the native file descriptors 1 and 2, sent to /dev/null; ``env`` sets
    environment variables for the block (a library's own quiet switch, e.g. TQDM_DISABLE) and restores them."""
    saved_env = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
