"""Image datasets: scan an ImageFolder, decode once into a uint8 tensor cache, split stratified and seeded.

Bad input never raises a traceback: a missing folder, fewer than two classes or an empty class is a one-line
``EdgeCNNError``; corrupt, oversized, unreadable or non-image files and non-UTF-8 names are skipped and counted;
grayscale (8 or 16 bit)/RGBA/palette images are converted to RGB (whether each image was grayscale is recorded:
a grayscale dataset trains on one channel); images of another size are resized (stretched, centre-cropped or
padded to a square).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecnn.data.fingerprint import fingerprint_files
from edgecnn.data.storage import CacheWriter, ImageRows, exclusive, open_cache, payload_digest
from edgecnn.errors import EdgeCNNError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif"}
SAMPLE_ROOT = Path(__file__).parent / "sample" / "eurosat"
CACHE_VERSION = 4  # 2: 16-bit images scaled to 8 bits; 3: grayscale flags, resize policy; 4: content keys
MAX_PIXELS = 64_000_000  # larger images (header size) are skipped: 8000 x 8000 decodes to ~200 MB


@dataclass
class ImageFolderIndex:
    """The image files of an ImageFolder, in a stable order (class, then natural file order)."""

    root: Path
    classes: list[str]
    files: list[str]  # paths relative to root, '/'-separated
    labels: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


def _natural_key(name: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def scan_image_folder(root: str | Path) -> ImageFolderIndex:
    """List class folders and their image files; files with other extensions are skipped and recorded."""
    root = Path(root).expanduser()
    if not root.exists():
        raise EdgeCNNError(f"data folder not found: {root}; pass --data PATH of an ImageFolder (one sub-folder per "
                           f"class)")
    if not root.is_dir():
        raise EdgeCNNError(f"data path is not a folder: {root}; pass the folder that holds one sub-folder per class")
    classes = sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and _own_folder(p, root)), key=_natural_key)
    if not classes:
        raise EdgeCNNError(f"no class folders in {root}; expected one sub-folder per class with the images inside")
    if len(classes) == 1:
        raise EdgeCNNError(f"{root} has one class folder ({classes[0]}); a classifier needs at least two classes, "
                           "one sub-folder each")
    files: list[str] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    for label, cls in enumerate(classes):
        found = 0
        for dirpath, dirnames, filenames in os.walk(root / cls):
            dirnames.sort(key=_natural_key)
            for name in sorted(filenames, key=_natural_key):
                rel = Path(dirpath, name).relative_to(root).as_posix()
                if name.startswith("."):
                    continue
                if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped.append((rel, "not an image file"))
                    continue
                if (problem := _unreadable(Path(dirpath, name), rel)) is not None:
                    skipped.append((rel, problem))
                    continue
                files.append(rel)
                labels.append(label)
                found += 1
        if not found:
            raise EdgeCNNError(
                f"class folder '{root / cls}' has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or "
                f"remove the folder"
            )
    return ImageFolderIndex(root, classes, files, labels, skipped)


def _own_folder(path: Path, root: Path) -> bool:
    """False (with a warning) for a class folder that is a link back to the dataset or above it, which would add a
    bogus class holding copies of every image."""
    target, top = path.resolve(), root.resolve()
    if target == top or top.is_relative_to(target):
        log.warning("skipped class folder %s: it links back to %s", path, target)
        return False
    return True


def _unreadable(path: Path, rel: str) -> str | None:
    """Why a listed file cannot be used (a name that is not UTF-8, a broken link or a link loop, or not a regular
    file: a FIFO or device named like an image would block the decoder forever), else None."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    if not stat.S_ISREG(mode):
        return "not a regular file (a pipe, socket or device)"
    return None


@dataclass
class DecodedImages:
    """All images of an index as uint8 rows (N, 3, H, W), memory-mapped from the cache file or in memory; rows of
    undecodable files are zero."""

    images: ImageRows
    valid: np.ndarray  # bool per file
    failures: list[tuple[str, str]]  # (relative path, reason) of corrupt / unreadable files
    converted: int  # images converted to RGB (grayscale, RGBA, palette, CMYK)
    resized: int  # images resized to the requested size
    from_cache: bool
    gray: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per file: R = G = B everywhere
    fingerprint: str = ""  # the content digest of the files (data.fingerprint), the data's identity

    def all_gray(self) -> bool:
        """Whether every decodable image is grayscale (its three channels equal)."""
        return bool(self.gray[self.valid].all()) if self.valid.any() else False


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGECNN_CACHE", Path.home() / ".cache" / "edgecnn"))


def _cache_key(fingerprint: str, image_size: int, resize: str) -> str:
    """The cache of files with this content (names and bytes) decoded at this size and policy; a copied dataset
    shares it, a file replaced under the same name does not."""
    return hashlib.sha256(json.dumps([CACHE_VERSION, fingerprint, image_size, resize]).encode()).hexdigest()[:32]


def _to_8bit(im):
    """16/32-bit grayscale (PNG ``I;16`` or ``I``) scaled to 8 bits; PIL's own convert would clip it to white."""
    from PIL import Image

    arr = np.asarray(im)
    top = 65535 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
    return Image.fromarray(np.clip(arr.astype(np.float64) * 255.0 / top + 0.5, 0, 255).astype(np.uint8), "L")


def _square(im, image_size: int, resize: str):
    """``im`` as an image_size x image_size image: stretched, centre-cropped or padded with black."""
    from PIL import Image, ImageOps

    size, method = (image_size, image_size), Image.Resampling.BILINEAR
    if resize == "crop":
        return ImageOps.fit(im, size, method)
    if resize == "pad":
        return ImageOps.pad(im, size, method, color=(0, 0, 0))
    return im.resize(size, method)


def _decode_one(path: Path, image_size: int, resize: str = "stretch") -> tuple[np.ndarray | None, str, bool, bool]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL warns on large headers; MAX_PIXELS decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im: Image.Image = Image.open(path)
        with im:
            width, height = im.size
            if width * height > MAX_PIXELS:  # read from the header: refuse before decoding a decompression bomb
                return None, f"too large ({width}x{height} pixels)", False, False
            im.load()
            converted = im.mode != "RGB"
            if im.mode.startswith("I"):
                im = _to_8bit(im)
            if converted:
                im = im.convert("RGB")
            resized = im.size != (image_size, image_size)
            if resized:
                im = _square(im, image_size, resize)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1), "", converted, resized
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return None, f"cannot decode ({type(exc).__name__})", False, False


def decode_images(index: ImageFolderIndex, image_size: int, cache_dir: str | Path | None = None, *,
                  mapped: bool = True, resize: str = "stretch") -> DecodedImages:
    """Decode every file once into a uint8 cache file keyed by the file list, sizes, mtimes, ``image_size`` and
    the ``resize`` policy (stretch, crop or pad).

    ``mapped``: read the cache memory-mapped (the default; processes share one copy in the page cache) rather
    than loading it into this process's memory. The first process to need a cache decodes it under a file lock
    while the others wait, then read it; a truncated or unreadable cache file is decoded again.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    content = fingerprint_files(index.root, index.files, cache)
    log.debug("data fingerprint %s: %d files, %d read, %.2f s", content.digest, content.files, content.read,
              content.seconds)
    key = _cache_key(content.digest, image_size, resize)
    npy, meta_path = cache / f"images-{key}.npy", cache / f"images-{key}.json"
    shape = (len(index.files), 3, image_size, image_size)
    try:
        with exclusive(cache / f"images-{key}.lock"):
            if (found := _read_cache(npy, meta_path, shape, mapped)) is not None:
                found.fingerprint = content.digest
                return found
            writer = CacheWriter(npy, shape)
            try:
                stats = _decode_all(index, image_size, writer.write, resize)
                _write_json(meta_path, {"valid": stats[0].tolist(), "failures": stats[1], "converted": stats[2],
                                        "resized": stats[3], "gray": stats[4].tolist(), "payload": writer.digest})
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            rows = open_cache(npy, shape, mapped)
            if rows is None:
                raise OSError(f"{npy} unreadable right after writing it")
            return DecodedImages(rows, *stats[:4], False, stats[4], content.digest)
    except OSError as exc:  # a read-only or full cache folder must not stop the run
        log.warning("cannot use the image cache in %s (%s); decoding into memory", cache, exc)
    images = np.zeros(shape, dtype=np.uint8)

    def put(row: np.ndarray | None, rows=iter(range(len(index.files)))) -> None:
        i = next(rows)
        if row is not None:
            images[i] = row

    stats = _decode_all(index, image_size, put, resize)
    return DecodedImages(ImageRows(images), *stats[:4], False, stats[4], content.digest)


def _read_cache(npy: Path, meta_path: Path, shape: tuple[int, ...], mapped: bool) -> DecodedImages | None:
    if not (npy.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if payload_digest(npy) != meta["payload"]:  # rows overwritten with header and size intact
            log.warning("image cache %s does not hold what was written; decoding again", npy)
            return None
        rows = open_cache(npy, shape, mapped)
        if rows is None:
            return None
        valid, gray = np.array(meta["valid"], dtype=bool), np.array(meta["gray"], dtype=bool)
        if valid.shape != (shape[0],) or gray.shape != (shape[0],):
            raise ValueError("metadata of another length")
        return DecodedImages(rows, valid, [tuple(f) for f in meta["failures"]], meta["converted"], meta["resized"],
                             True, gray)
    except (OSError, ValueError, KeyError, IndexError, TypeError):  # corrupt metadata: decode again
        log.warning("image cache %s is unreadable; decoding again", npy)
        return None


def _decode_all(index: ImageFolderIndex, image_size: int, put,
                resize: str = "stretch") -> tuple[np.ndarray, list, int, int, np.ndarray]:
    """Decode the files in order, handing each row (None when undecodable) to ``put``; returns (valid, failures,
    converted, resized, gray)."""
    valid = np.zeros(len(index.files), dtype=bool)
    gray = np.zeros(len(index.files), dtype=bool)
    failures: list[tuple[str, str]] = []
    converted = resized = 0
    for i, rel in enumerate(index.files):
        arr, reason, was_converted, was_resized = _decode_one(index.root / rel, image_size, resize)
        put(arr)
        if arr is None:
            failures.append((rel, reason))
            continue
        valid[i] = True
        gray[i] = bool((arr[0] == arr[1]).all() and (arr[1] == arr[2]).all())
        converted += was_converted
        resized += was_resized
    if failures:
        log.warning("skipped %d corrupt or unreadable image(s), e.g. %s", len(failures), failures[0][0])
    return valid, failures, converted, resized, gray


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def stratified_split(labels: np.ndarray, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Indices of train/val/test with each class split in the same proportions; seeded and deterministic."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise EdgeCNNError(f"split fractions val={val} test={test} must be in [0, 1) and sum below 1")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_test, n_val = int(round(len(idx) * test)), int(round(len(idx) * val))
        if len(idx) >= 3:  # every split gets at least one image of a class when it asks for some
            n_test, n_val = max(n_test, 1 if test else 0), max(n_val, 1 if val else 0)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def limit_per_class(labels: list[int], limit: int | None, seed: int) -> np.ndarray:
    """Indices keeping at most ``limit`` files per class (a seeded choice), for quick runs and tests."""
    labels_arr = np.asarray(labels)
    if not limit:
        return np.arange(len(labels_arr))
    rng = np.random.default_rng(seed + 7919)
    keep = []
    for cls in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == cls)
        keep.append(np.sort(rng.choice(idx, size=min(limit, len(idx)), replace=False)))
    return np.sort(np.concatenate(keep))


def class_counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    counts = Counter(int(x) for x in labels)
    return {c: counts.get(i, 0) for i, c in enumerate(classes)}


def torchvision_eurosat(root: str | Path) -> Path:
    """Download EuroSAT RGB with torchvision (online users only) and return its ImageFolder path."""
    from torchvision.datasets import EuroSAT

    try:
        ds = EuroSAT(str(root), download=True)
    except Exception as exc:
        raise EdgeCNNError(
            f"EuroSAT download failed ({type(exc).__name__}); offline, set data.root to a local ImageFolder instead"
        ) from None
    return Path(ds._data_folder)  # root/eurosat/2750, an ImageFolder
