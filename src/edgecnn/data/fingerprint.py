"""A dataset's identity is its content: a digest of every image file's bytes, not of its name, size or mtime.

Each file's digest is blake2b over its size and its bytes (files up to ``FULL_BYTES``; larger ones: three
``SAMPLE_BYTES`` samples at the start, middle and end, which no two different images share). Re-reading every
file on every run would cost minutes on a million images, so the digests are remembered in the cache folder
keyed by what the operating system changes whenever a file's content changes: size, mtime, ctime and inode.
ctime cannot be set back by a user (``touch -d`` and ``cp -p`` restore mtime, not ctime), so a file replaced under
the same name with the same size and mtime is still read again. A moved or copied dataset is read once more.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FULL_BYTES = 256 * 1024  # files up to this size are hashed whole
SAMPLE_BYTES = 64 * 1024  # larger files: this much at the start, the middle and the end
VERSION = 1


@dataclass
class Fingerprint:
    """The content digest of a list of files, and what computing it cost."""

    digest: str
    files: int
    read: int  # files whose bytes were read (the others' digests were remembered)
    seconds: float


def file_digest(path: Path, size: int) -> str:
    """blake2b of a file's size and content (whole, or three samples of a large file)."""
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        if size <= FULL_BYTES:
            h.update(f.read())
        else:
            for offset in (0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES):
                f.seek(offset)
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def fingerprint_files(root: Path, files: list[str], cache_dir: Path | None = None) -> Fingerprint:
    """The content fingerprint of ``files`` (paths relative to ``root``, in order), reusing the digests remembered
    in ``cache_dir`` for files whose size, mtime, ctime and inode are unchanged."""
    start = time.perf_counter()
    memo_path = _memo_path(root, cache_dir)
    memo = _read_memo(memo_path)
    fresh: dict[str, list] = {}
    total = hashlib.blake2b(digest_size=16)
    read = 0
    for rel in files:
        path = root / rel
        stamp = _stamp(path.stat())
        known = memo.get(rel)
        if known is not None and known[:4] == stamp:
            digest = known[4]
        else:
            digest = file_digest(path, stamp[0])
            read += 1
        fresh[rel] = [*stamp, digest]
        total.update(f"{rel}\0{digest}\n".encode())
    if memo_path is not None and read:
        _write_memo(memo_path, fresh)
    return Fingerprint(total.hexdigest(), len(files), read, round(time.perf_counter() - start, 3))


def _memo_path(root: Path, cache_dir: Path | None) -> Path | None:
    if cache_dir is None:
        return None
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"digests-{key}.json"


def _read_memo(path: Path | None) -> dict[str, list]:
    """The remembered digests, or none when the file is missing, unreadable or of another version."""
    if path is None or not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        files = record["files"] if record.get("version") == VERSION else {}
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.info("file digests %s are unreadable; reading the files again", path)
        return {}


def _write_memo(path: Path, files: dict[str, list]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": VERSION, "files": files}))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache: the digests are computed again next time, nothing is wrong
        log.info("cannot remember file digests in %s (%s)", path, exc)
