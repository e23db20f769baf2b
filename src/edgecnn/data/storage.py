"""The decoded uint8 image cache as a file on disk, and row access to it in memory or memory-mapped.

The cache is an ``.npy`` file written once, sequentially (never held in RAM while decoding), under an exclusive
file lock so that several processes (DDP ranks, search workers, two runs) decode a dataset once and then share the
operating system's page cache instead of each holding a private copy. A memory-mapped reader keeps only the rows it
touched lately resident: after every ``RELEASE_BYTES`` read it drops its page mappings (``madvise(DONTNEED)``;
the pages stay in the page cache), so a dataset larger than RAM trains with a bounded resident set.
numpy's ``.npy`` format and Python's ``mmap`` do the work; this module only adds the locking, the truncation check
and the row view.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

RELEASE_BYTES = 32 * 2**20  # a memory-mapped reader drops its page mappings after mapping about this much
# A page fault on a file mapping maps the neighbouring cached pages too (Linux's fault-around, 64 KiB by default), so
# each row read can leave up to this much more resident than its own bytes.
FAULT_AROUND_BYTES = 64 * 2**10


class CacheWriter:
    """Writes an (N, 3, H, W) uint8 ``.npy`` file row by row into a temporary file; ``commit()`` renames it into
    place atomically, so a reader never sees a half-written cache (a killed writer leaves only the temporary)."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path, self.shape = path, shape
        self.tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        self._file = open(self.tmp, "wb")  # noqa: SIM115 (closed in commit/abort)
        np.lib.format.write_array_header_2_0(self._file, {"descr": "|u1", "fortran_order": False, "shape": shape})
        self._row_bytes = int(np.prod(shape[1:]))
        self._rows = 0
        self._digest = hashlib.blake2b(digest_size=16)

    def write(self, row: np.ndarray | None) -> None:
        """The next row (None: an undecodable image, stored as zeros)."""
        data = np.zeros(self.shape[1:], np.uint8) if row is None else np.ascontiguousarray(row, np.uint8)
        raw = data.tobytes()
        self._file.write(raw)
        self._digest.update(raw)
        self._rows += 1

    @property
    def digest(self) -> str:
        """blake2b of the rows written (what ``payload_digest`` of the committed file gives)."""
        return self._digest.hexdigest()

    def commit(self) -> None:
        if self._rows != self.shape[0]:
            self.abort()
            raise RuntimeError(f"cache writer got {self._rows} rows for {self.shape[0]}")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock held by one process at a time (released when the process dies)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def open_cache(path: Path, shape: tuple[int, ...], mapped: bool) -> ImageRows | None:
    """The cache file as rows, or None when it is missing, truncated or of another shape (then it is rebuilt)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            stored_shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (OSError, ValueError):
        return None
    expected = offset + int(np.prod(shape))
    if tuple(stored_shape) != tuple(shape) or fortran or dtype != np.uint8 or path.stat().st_size != expected:
        log.warning("image cache %s is incomplete or stale; decoding again", path)
        return None
    if not mapped:
        return ImageRows(np.load(path, allow_pickle=False))
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    array = np.frombuffer(mapping, dtype=np.uint8, count=int(np.prod(shape)), offset=offset).reshape(shape)
    return ImageRows(array, mapping=mapping)


def luminance(rgb: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """uint8 RGB -> uint8 luminance with the channel axis kept (size 1): ITU-R 601 weights in PIL's fixed point,
    so equal R, G and B give back that value exactly."""
    r, g, b = (np.take(rgb, i, axis=channel_axis).astype(np.uint32) for i in range(3))
    y = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    return np.expand_dims(y.astype(np.uint8), channel_axis)


def payload_digest(path: Path) -> str | None:
    """blake2b of an ``.npy`` file's data (after its header): whether a cache still holds what was written, also
    when its header and size are intact but its rows were overwritten. None when it cannot be read."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
            for chunk in iter(lambda: f.read(16 * 2**20), b""):
                digest.update(chunk)
    except (OSError, ValueError):
        return None
    return digest.hexdigest()


class ImageRows:
    """uint8 images (N, 3, H, W) read by row: a view of some rows of an in-memory array or a memory-mapped cache.

    Indexing (an int, a slice, a list or an index tensor) returns a new uint8 tensor; ``select`` returns a view of
    a subset without copying, which is how the train/val/test splits share one cache. A ``luma`` view reads the
    RGB rows as one luminance channel (N, 1, H, W), with PIL's convert("L") arithmetic, so a grayscale image comes
    back exactly as it was stored; the cache stays RGB, so one cache serves 1- and 3-channel runs.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray | None = None, mapping: mmap.mmap | None = None,
                 _reads: list[int] | None = None, luma: bool = False) -> None:
        self.array, self.mapping, self.luma = array, mapping, luma
        self.rows = np.arange(array.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        self._reads = _reads if _reads is not None else [0]  # bytes read since the last release, shared by views

    @classmethod
    def from_tensor(cls, images: torch.Tensor) -> ImageRows:
        return cls(images.contiguous().numpy())

    @property
    def mapped(self) -> bool:
        return self.mapping is not None

    @property
    def shape(self) -> tuple[int, ...]:
        channels = 1 if self.luma else self.array.shape[1]
        return (len(self.rows), channels, *self.array.shape[2:])

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    @property
    def nbytes(self) -> int:
        return len(self.rows) * int(np.prod(self.shape[1:]))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), 256):
            yield from self[start:start + 256]

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, tuple):  # rows first, then positions inside the images: images[0, 0] is a channel
            return self[key[0]][key[1:]]
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        picked = self.rows[key]
        out = self.array[picked]
        if not out.flags.owndata:  # an int or slice is a view of the (possibly mapped) array: copy it out
            out = out.copy()
        if self.mapping is not None:
            rows = 1 if out.ndim == self.array.ndim - 1 else len(out)
            self._reads[0] += out.nbytes + rows * FAULT_AROUND_BYTES
            if self._reads[0] >= RELEASE_BYTES:
                self.release()
        if self.luma:
            out = luminance(out, channel_axis=out.ndim - 3)
        return torch.from_numpy(out)

    def select(self, rows) -> ImageRows:
        """A view of ``rows`` (positions in this view) sharing the same storage."""
        rows = rows.numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows, dtype=np.int64)
        return ImageRows(self.array, self.rows[rows], self.mapping, self._reads, self.luma)

    def as_luma(self) -> ImageRows:
        """The same rows read as one luminance channel."""
        return ImageRows(self.array, self.rows, self.mapping, self._reads, luma=True)

    def tensor(self) -> torch.Tensor:
        """All rows as one in-memory tensor (a copy)."""
        return self[:]

    def chunks(self, size: int = 1024) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), size):
            yield self[start:start + size]

    def release(self) -> None:
        """Drop this process's page mappings of a memory-mapped cache (the data stays in the page cache)."""
        self._reads[0] = 0
        if self.mapping is not None and hasattr(self.mapping, "madvise"):
            with contextlib.suppress(OSError, ValueError):
                self.mapping.madvise(mmap.MADV_DONTNEED)
