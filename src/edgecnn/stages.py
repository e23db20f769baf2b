"""Run-directory bookkeeping: a content hash of each stage's inputs (skip when unchanged), atomic records with
paths relative to the run, and a lock so that one run at a time works in a run directory.

A finished stage writes ``stage.json`` (inputs hash + outputs). On a rerun with the same hash it is skipped; with
a different hash the old folder is moved aside (``<stage>.prev-<hash>``), never deleted.

What a run directory guarantees: a record is reused (and reported) only while it matches its digest, a hash of
the record's outputs and of the content of every file they name. A hand-edited number, or a checkpoint or
model file replaced after the record was written, makes the record invalid: the stage runs again (its old folder
moved aside) and a report leaves it out. A record without a digest was written by an edgecnn from before digests:
it is adopted once (given its digest) so that an upgrade does not retrain finished runs.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from edgecnn.errors import EdgeCNNError

log = logging.getLogger(__name__)


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record, or None when it is missing or unreadable (a write cut short by a kill counts as not written)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, obj: Any) -> None:
    """Write a JSON record atomically (temporary file, then rename): a kill leaves the old record or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def _relativize(obj: Any, base: Path, key: tuple[str | int, ...] = ()) -> tuple[Any, list[list[str | int]]]:
    """``obj`` with every existing file path inside ``base`` made relative to it, and the key paths it changed."""
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        changed: list[list[str | int]] = []
        for k, v in obj.items():
            out[k], sub = _relativize(v, base, key + (k,))
            changed += sub
        return out, changed
    if isinstance(obj, list):
        pairs = [_relativize(v, base, key + (i,)) for i, v in enumerate(obj)]
        return [v for v, _ in pairs], [c for _, sub in pairs for c in sub]
    if isinstance(obj, str) and ("/" in obj or os.sep in obj) and Path(obj).exists():
        resolved, root = Path(obj).resolve(), base.resolve()
        if resolved.is_relative_to(root):
            return resolved.relative_to(root).as_posix(), [list(key)]
    return obj, []


def _get(obj: Any, key: list[str | int]) -> Any:
    for part in key:
        obj = obj[part]
    return obj


def record_digest(record: dict[str, Any], base: Path) -> str:
    """The digest a record carries: its inputs hash and outputs, and the content hash of every file they name."""
    files: dict[str, str | None] = {}
    for key in record.get("relative_paths", []):
        path = base / str(_get(record["outputs"], key))
        files[str(_get(record["outputs"], key))] = file_hash(path) if path.is_file() else None
    return content_hash({"hash": record.get("hash"), "outputs": record.get("outputs"), "files": files})


def _valid(record: dict[str, Any], base: Path, where: Path) -> bool:
    """Whether a finished record still matches its digest (else a warning naming the file); a record from before
    digests is valid (``Stage.cached`` adopts it)."""
    if "digest" not in record:
        return True
    try:
        ok = record.get("digest") == record_digest(record, base)
    except (KeyError, IndexError, TypeError, OSError):
        ok = False
    if not ok:
        log.warning("%s does not match what it describes (edited, or a file it names changed since); it is not "
                    "reused", where)
    return ok


def _absolutize(obj: Any, base: Path, keys: list[list[str | int]]) -> Any:
    """Undo _relativize: the listed key paths become ``base / value`` again (wherever the run directory now is)."""
    for key in keys:
        node = obj
        for part in key[:-1]:
            node = node[part]
        node[key[-1]] = str(base / node[key[-1]])
    return obj


class Stage:
    """One cached step of a run: its inputs (hashed), its folder, and a record of its outputs once finished.

    Paths to files inside the run directory are stored relative to it, so a moved or copied run is reused as is."""

    def __init__(self, run_dir: Path, name: str, inputs: dict[str, Any]) -> None:
        self.name = name
        self.base = Path(run_dir)
        self.dir = self.base / name
        self.inputs = inputs
        self.hash = content_hash(inputs)

    @property
    def record_path(self) -> Path:
        return self.dir / "stage.json"

    @property
    def inputs_path(self) -> Path:
        return self.dir / "inputs.json"

    def cached(self) -> dict[str, Any] | None:
        """The outputs of a finished run of this stage with the same inputs, else None."""
        record = read_json(self.record_path)
        if record is None or record.get("hash") != self.hash or record.get("status") != "done":
            return None
        if not _valid(record, self.base, self.record_path):
            return None
        if "digest" not in record:
            log.info("stage %s: adopting a record written before records carried a digest", self.name)
            write_json(self.record_path, {**record, "digest": record_digest(record, self.base)})
        log.info("stage %s: inputs unchanged (%s), skipped", self.name, self.hash)
        outputs: dict[str, Any] = _absolutize(record["outputs"], self.base, record.get("relative_paths", []))
        return outputs

    def interrupted(self) -> bool:
        """True when an earlier run of this stage with the same inputs started but did not finish."""
        started = read_json(self.inputs_path)
        return started is not None and started.get("hash") == self.hash and read_json(self.record_path) is None

    def begin(self, keep_partial: bool) -> None:
        """Prepare the folder: keep an interrupted run of the same inputs to resume (``keep_partial``) or start it
        again in place; move work done for other inputs aside (``<stage>.prev-<hash>``), never delete it."""
        if self.dir.exists() and self.interrupted():
            if not keep_partial:  # our own unfinished work for these very inputs: start again in place
                log.info("stage %s: an interrupted run with the same inputs starts again", self.name)
                shutil.rmtree(self.dir)
        elif self.dir.exists():
            old = (read_json(self.inputs_path) or {}).get("hash", "unknown")
            target = self.dir.with_name(f"{self.name}.prev-{old}")
            n = 1
            while target.exists():
                target = self.dir.with_name(f"{self.name}.prev-{old}-{n}")
                n += 1
            shutil.move(str(self.dir), str(target))
            log.info("stage %s: inputs changed; previous outputs kept in %s", self.name, target)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.inputs_path, {"hash": self.hash, "inputs": self.inputs})

    def finish(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """Record the outputs (atomically); returns them as given."""
        stored, relative = _relativize(outputs, self.base)
        record = {"hash": self.hash, "status": "done", "outputs": stored, "relative_paths": relative}
        write_json(self.record_path, {**record, "digest": record_digest(record, self.base)})
        return outputs


def stage_outputs(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The recorded outputs of the finished stage ``run_dir/name`` (paths resolved in this run directory), or None;
    for readers of a finished run (report, benchmarks) that do not know the stage's inputs."""
    path = Path(run_dir) / name / "stage.json"
    record = read_json(path)
    if record is None or record.get("status") != "done" or not _valid(record, Path(run_dir), path):
        return None
    outputs: dict[str, Any] = _absolutize(record["outputs"], Path(run_dir), record.get("relative_paths", []))
    return outputs


class RunLock:
    """An exclusive lock on a run directory, so two runs cannot move or overwrite each other's stages.

    ``.lock`` is held with ``flock`` for the life of the run (the kernel releases it when the process dies, however
    it dies) and names its holder (pid, host, start time) for the message a second run gets. A lock file whose flock
    is free was left by a process that is gone, or is not a lock at all: it is taken over with a message, unless it
    names a process of this host that is still running (an edgecnn from before flock)."""

    HINT = "wait for it to finish or give this run another name (name: in the experiment)"

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False
        self._fd: int | None = None

    def _holder_alive(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return True  # cannot tell: assume it is running
        try:
            os.kill(int(holder.get("pid", -1)), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError, OverflowError):
            return True
        return True

    def _refuse(self, holder: dict[str, Any]) -> EdgeCNNError:
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return EdgeCNNError(f"{self.path.parent} is already in use by this process")
        who = f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}" if holder else \
            "another process"
        return EdgeCNNError(f"run directory {self.path.parent} is in use by {who}; {self.HINT}")

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refuse(read_json(self.path) or {}) from None
        holder = read_json(self.path)
        if holder and holder.get("pid") != os.getpid() and self._holder_alive(holder):
            os.close(fd)
            raise self._refuse(holder)
        if holder is not None or os.fstat(fd).st_size:
            log.warning("run directory %s: taking over the lock of %s, which is no longer running",
                        self.path.parent, f"process {holder.get('pid', '?')}" if holder else "an unreadable lock file")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        self._fd, self.held = fd, True
        return self

    def release(self) -> None:
        if self.held and self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing drops the flock
            self._fd, self.held = None, False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
