"""A checkpoint written into a full disk or past the process's file-size limit fails as the OSError it is, so the
CLI reports it in one line (exit 2), and nothing half-written is left beside the checkpoints."""
from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from edgecnn.train.checkpoint import _as_os_error

WRITE_UNDER_LIMIT = """
import errno, resource, sys, torch
from pathlib import Path
from edgecnn.train.checkpoint import save_checkpoint
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # Python ignores SIGXFSZ: writes fail with EFBIG
model = torch.nn.Linear(512, 512)  # 1 MB of weights
out = Path(sys.argv[1])
try:
    save_checkpoint(model, out / "m.safetensors", {"arch": "x"})
except OSError as exc:
    print("errno", exc.errno, "leftover", sorted(p.name for p in out.iterdir()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics are Linux's")
def test_a_file_size_limit_is_an_os_error_and_leaves_no_partial_file(tmp_path):
    done = subprocess.run([sys.executable, "-c", WRITE_UNDER_LIMIT, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert f"errno {errno.EFBIG} leftover []" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("text, code", [
    ("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })",
     errno.ENOSPC),
    ("IoError(Os { code: 27, kind: FileTooLarge, message: \"File too large\" })", errno.EFBIG),
    ("IoError(Custom { kind: StorageFull })", errno.ENOSPC),
    ("Error while serializing: I/O error: File too large (os error 27)", errno.EFBIG),
])
def test_safetensors_io_errors_become_os_errors(tmp_path, text, code):
    converted = _as_os_error(RuntimeError(text), tmp_path / "m.safetensors")
    assert isinstance(converted, OSError) and converted.errno == code
    assert converted.filename == str(tmp_path / "m.safetensors")


def test_the_cli_names_a_file_size_limit_in_one_line():
    from edgecnn.cli_boundary import _storage_error

    message = str(_storage_error(OSError(errno.EFBIG, "File too large", "/runs/x/last.safetensors"), "run"))
    assert message.startswith("file too large") and "ulimit -f" in message and "/runs/x/last.safetensors" in message
