"""What an image folder holds, checked before training: class counts, the files' original sizes and modes, skipped
files, and duplicates across the train/val/test splits (a test image with a copy in train inflates every accuracy),
each with what a run does about it.

Duplicates are looked for in the decoded rows at the training resolution, i.e. what the model sees:

* identical: equal bytes (blake2b of each row);
* near: a 64-bit perceptual hash (imagehash's pHash, on the decoded rows with an area resize: luminance, 32x32,
  2-D DCT-II, the 8x8 lowest frequencies against their median) within ``near_threshold`` differing bits, found by
  pigeonhole banding (no all-pairs matrix), then confirmed by a 256-bit pHash of the 16x16 lowest frequencies within
  ``confirm_threshold`` bits. On 64-pixel EuroSAT patches the 64-bit hash alone pairs look-alikes that share only a
  coarse layout (a diagonal field edge, a bright corner): 88 or more of 256 bits apart, while edited copies (noise,
  brightness, contrast, JPEG, rescaling) stay within 30 and overlapping patches of one place within 34-58.
* images whose coarse structure is near uniform (flat water, dark forest: the std of the 8x8 lowest frequencies
  below ``min_contrast`` grey levels) get hashes set by noise and pair with other flat images: they are left out of
  near matching (and counted); identical copies of them are still found.
"""
from __future__ import annotations

import hashlib
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from edgecnn.data.datasets import class_counts
from edgecnn.errors import EdgeCNNError

if TYPE_CHECKING:
    from edgecnn.data.options import DataConfig
    from edgecnn.data.prepare import PreparedData
    from edgecnn.data.storage import ImageRows

SPLITS = ("train", "val", "test")
ACROSS = (("train", "test"), ("train", "val"), ("val", "test"))  # (first, second): second's images with a copy
NEAR_BITS = 4  # of 64: edited copies (noise, brightness, JPEG 50, rescaling) stay within 4 bits in 98-100% of cases
MAX_NEAR_BITS = 12  # beyond it the 64-bit hash pairs unrelated images and the bands get too short to prune pairs
CONFIRM_BITS = 64  # of 256: edited copies <= 30, one place photographed twice 34-58, look-alikes >= 88
MIN_CONTRAST = 5.0  # grey levels (0-255) of the coarse structure; below it hashes of flat patches pair at random
EXAMPLES = 5
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


@dataclass
class SizeSummary:
    """The files' original sizes and modes, read from their headers (no pixels decoded)."""

    distinct: int = 0
    common: list[tuple[int, int, int]] = field(default_factory=list)  # (width, height, images), most common first
    largest: tuple[int, int] = (0, 0)  # by area
    min_width: int = 0
    max_width: int = 0
    min_height: int = 0
    max_height: int = 0
    min_aspect: float = 1.0  # width / height
    max_aspect: float = 1.0
    not_square: int = 0
    smaller: int = 0  # images with a side shorter than the training size: upscaled
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode (L, RGB, RGBA, P, I;16 ...) -> images
    bits: dict[str, int] = field(default_factory=dict)  # bits per channel -> images
    grayscale: int = 0
    unreadable: int = 0  # headers that could not be read


@dataclass
class SplitOverlap:
    """Duplicates between two splits: images of ``second`` with a copy in ``first``."""

    first: str
    second: str
    identical_pairs: int
    near_pairs: int  # confirmed near-duplicate pairs that are not identical
    identical_images: int  # images of ``second`` with an identical copy in ``first``
    images: int  # images of ``second`` with an identical or near copy in ``first``
    examples: list[dict[str, Any]]  # {"first", "second": file, "distance": bits of 64, "identical": bool}


@dataclass
class DuplicateSummary:
    """Identical and near duplicates across and within the splits, with the thresholds that decided them."""

    near_threshold: int  # bits of the 64-bit pHash
    confirm_threshold: int  # bits of the 256-bit pHash
    min_contrast: float
    low_contrast: int  # images left out of near matching
    candidates: int  # pairs within near_threshold (of distinct images), before the confirmation
    rejected: int  # of those, pairs the 256-bit hash found apart (look-alikes)
    across: list[SplitOverlap]
    within: dict[str, dict[str, int]]  # split -> {"identical_pairs", "near_pairs"}


@dataclass
class DatasetCheck:
    """What ``edgecnn data`` reports about an image folder, and what a run will do about it."""

    root: str
    classes: list[str]
    image_size: int
    channels: int  # of the decoded images the model takes
    counts: dict[str, dict[str, int]]  # split -> class -> images
    imbalance: float  # largest / smallest class in train
    smallest_class: str
    smallest_count: int  # its train images
    sizes: SizeSummary
    skipped: dict[str, Any]  # corrupt and non-image files (from the data report)
    duplicates: DuplicateSummary
    actions: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # time of each part

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImageHashes:
    """Per image: blake2b digest of its bytes, 64- and 256-bit pHashes and coarse contrast."""

    digest: np.ndarray  # (N,) void16
    h64: np.ndarray  # (N,) uint64, first bit most significant (imagehash's hex order)
    h256: np.ndarray  # (N, 4) uint64
    contrast: np.ndarray  # (N,) float64, grey levels

    @classmethod
    def concat(cls, parts: list[ImageHashes]) -> ImageHashes:
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("digest", "h64", "h256", "contrast")))


def check_dataset(cfg: DataConfig, seed: int, **options: Any) -> DatasetCheck:
    """Prepare the data as a run with ``cfg`` and ``seed`` would (same seeded split) and check it; ``options``
    go to :func:`check_prepared`."""
    from edgecnn.data.prepare import prepare_data

    _check_threshold(options.get("near_threshold", NEAR_BITS))  # before the (long) decoding
    start = time.perf_counter()
    data = prepare_data(cfg, seed)
    prepared = time.perf_counter() - start
    check = check_prepared(data, **options)
    check.seconds = {"prepare": round(prepared, 3), **check.seconds}
    return check


def check_prepared(data: PreparedData, *, near_threshold: int = NEAR_BITS, confirm_threshold: int = CONFIRM_BITS,
                   min_contrast: float = MIN_CONTRAST, settings: Mapping[str, Any] | None = None) -> DatasetCheck:
    """Counts, original sizes and modes, skipped files and duplicates of prepared data, and the actions a run takes.

    ``settings``: the run's options that the actions name (``data.resize``, ``data.channels``,
    ``train.class_balance``, ``train.select_by``); missing ones are read from ``data`` or are the defaults.
    """
    _check_threshold(near_threshold)
    seconds: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 3)
        clock[0] = now

    counts = {name: class_counts(data.splits[name].labels.numpy(), data.classes) for name in SPLITS}
    train = counts["train"]
    smallest = min(train, key=lambda c: train[c])
    lap("counts")
    files = [rel for name in SPLITS for rel in data.files[name]]
    sizes = read_headers(data.root, files, data.image_size)
    lap("headers")
    hashes = ImageHashes.concat([image_hashes(data.splits[name].images) for name in SPLITS])
    lap("hashes")
    split_of = np.repeat(np.arange(len(SPLITS)), [len(data.files[name]) for name in SPLITS])
    duplicates = find_duplicates(hashes, split_of, files, near_threshold=near_threshold,
                                 confirm_threshold=confirm_threshold, min_contrast=min_contrast)
    lap("duplicates")
    report = data.report
    skipped = {"corrupt": int(report.get("corrupt_images_skipped", 0)),
               "non_image": int(report.get("non_image_files_skipped", 0)),
               "corrupt_examples": list(report.get("corrupt_examples", []))}
    check = DatasetCheck(str(data.root), list(data.classes), data.image_size, int(data.splits["train"].images.shape[1]),
                         counts, round(max(train.values()) / max(1, train[smallest]), 2), smallest, train[smallest],
                         sizes, skipped, duplicates, seconds=seconds)
    known = {"data.resize": getattr(data, "resize", "stretch"), "data.channels": report.get("channels_setting", "auto")}
    check.actions = advise(check, {**known, **(settings or {})})
    return check


def _check_threshold(bits: int) -> None:
    if not 0 <= bits <= MAX_NEAR_BITS:
        raise EdgeCNNError(f"near-duplicate threshold {bits} is not 0-{MAX_NEAR_BITS} bits of 64; the default "
                           f"{NEAR_BITS} finds edited copies")


def read_headers(root: Path, files: list[str], image_size: int) -> SizeSummary:
    """Sizes and modes of ``files`` from their headers: PIL's open is lazy, no pixel is decoded."""
    from PIL import Image

    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    unreadable = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for rel in files:
            try:
                with Image.open(root / rel) as im:
                    sizes[im.size] += 1
                    modes[im.mode] += 1
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                unreadable += 1
    if not sizes:
        return SizeSummary(unreadable=unreadable)
    wh = np.array(list(sizes), dtype=np.int64)
    n = np.array(list(sizes.values()), dtype=np.int64)
    aspect = wh[:, 0] / wh[:, 1]
    big = wh[np.argmax(wh[:, 0] * wh[:, 1])]
    bits: Counter[str] = Counter()
    for mode, count in modes.items():
        bits[str(mode_bits(mode))] += count
    return SizeSummary(
        distinct=len(sizes), common=[(w, h, c) for (w, h), c in sizes.most_common(5)],
        largest=(int(big[0]), int(big[1])),
        min_width=int(wh[:, 0].min()), max_width=int(wh[:, 0].max()), min_height=int(wh[:, 1].min()),
        max_height=int(wh[:, 1].max()), min_aspect=round(float(aspect.min()), 3),
        max_aspect=round(float(aspect.max()), 3), not_square=int(n[wh[:, 0] != wh[:, 1]].sum()),
        smaller=int(n[wh.min(axis=1) < image_size].sum()), modes=dict(modes.most_common()),
        bits=dict(sorted(bits.items(), key=lambda kv: int(kv[0]))),
        grayscale=sum(c for m, c in modes.items() if _is_gray(m)), unreadable=unreadable)


def mode_bits(mode: str) -> int:
    """Bits per channel of a PIL mode."""
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    return 32 if mode in ("I", "F") else 8


def _is_gray(mode: str) -> bool:
    return mode in _GRAY_MODES or mode.startswith("I;16")


# ---------------------------------------------------------------------------------------------------- hashes

def _dct_matrix(n: int = 32) -> torch.Tensor:
    """The DCT-II matrix without scaling (scipy's ``dct`` up to a factor 2): ``D @ X @ D.T`` is the 2-D DCT."""
    k = torch.arange(n, dtype=torch.float64)
    return torch.cos(torch.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))


_DCT = _dct_matrix()
_ORTHO = torch.full((32,), (2 / 32) ** 0.5, dtype=torch.float64)
_ORTHO[0] = (1 / 32) ** 0.5  # the scale of each coefficient in the orthonormal DCT: energy preserving
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601: PIL's convert("L")


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W) float64 luminance (one channel: itself)."""
    x = x.to(torch.float64)
    if x.shape[1] == 1:
        return x[:, 0]
    return x[:, 0] * _LUMA[0] + x[:, 1] * _LUMA[1] + x[:, 2] * _LUMA[2]


def phash_rows(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64-bit and 256-bit pHashes and the coarse contrast of uint8 images (N, C, H, W), all images at once.

    pHash: luminance, 32x32 area resize, 2-D DCT-II, the top-left 8x8 (16x16) coefficients, a bit per coefficient
    above their median (row-major, first bit most significant). Contrast: the std of the image made of the 8x8
    lowest frequencies but the mean, in grey levels: the signal the 64-bit hash is decided by. The channels are
    resized before they are mixed (both are linear): a quarter of the work at 64 pixels.
    """
    small = luminance(F.adaptive_avg_pool2d(x.to(torch.float32), 32))
    coef = _DCT @ small @ _DCT.T
    low8 = coef[:, :8, :8].reshape(len(x), 64)
    low16 = coef[:, :16, :16].reshape(len(x), 256)
    ortho = (coef[:, :8, :8] * (_ORTHO[:8, None] * _ORTHO[None, :8])).reshape(len(x), 64)
    contrast = ortho[:, 1:].square().sum(1).sqrt() / 32
    return _pack(low8 > low8.median(1, keepdim=True).values)[:, 0], \
        _pack(low16 > low16.median(1, keepdim=True).values), contrast.numpy()


def _pack(bits: torch.Tensor) -> np.ndarray:
    """(N, 64k) bools -> (N, k) uint64, each word's first bit most significant."""
    packed = np.packbits(bits.numpy(), axis=1)  # most significant bit first
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64)


def image_hashes(images: torch.Tensor | ImageRows, pixels_per_chunk: int = 1 << 23) -> ImageHashes:
    """Digests, pHashes and contrast of every row, read in chunks (a memory-mapped set is never loaded whole)."""
    n = int(images.shape[0])
    rows = max(1, pixels_per_chunk // int(np.prod(images.shape[1:])))
    parts = [_hash_chunk(torch.as_tensor(images[start:start + rows])) for start in range(0, n, rows)]
    if not parts:
        return ImageHashes(np.zeros(0, "V16"), np.zeros(0, np.uint64), np.zeros((0, 4), np.uint64), np.zeros(0))
    return ImageHashes.concat(parts)


def _hash_chunk(x: torch.Tensor) -> ImageHashes:
    arr = np.ascontiguousarray(x.numpy())
    digest = np.frombuffer(b"".join(hashlib.blake2b(row.data, digest_size=16).digest() for row in arr), "V16")
    h64, h256, contrast = phash_rows(x)
    return ImageHashes(digest, h64, h256, contrast)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (int64 result)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    count = getattr(np, "bitwise_count", None)  # numpy >= 2
    if count is not None:
        return count(x).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


# ---------------------------------------------------------------------------------------------------- pairs

def near_pairs(hashes: np.ndarray, threshold: int, batch: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i < j of 64-bit hashes at most ``threshold`` bits apart, as (i, j, distance) sorted by (i, j).

    Pigeonhole banding instead of an all-pairs matrix: the 64 bits are cut into threshold + 1 bands, and two hashes
    that differ in at most threshold bits agree exactly on at least one band. Hashes sharing a band's value (one sort
    per band) are the only candidates; each is verified by popcount and kept in the first band it agrees on, so no
    pair is reported twice. ``batch`` bounds the candidates held at once.
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    keys = [(h >> np.uint64(shift)) & np.uint64((1 << width) - 1) for shift, width in _bands(threshold)]
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for b, key in enumerate(keys):
        for left, right in _bucket_pairs(key, batch):
            dist = popcount(h[left] ^ h[right])
            keep = dist <= threshold
            for earlier in keys[:b]:
                keep &= earlier[left] != earlier[right]
            found.append((left[keep], right[keep], dist[keep]))
    if not found:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    i, j, d = (np.concatenate(parts) for parts in zip(*found))
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((hi, lo))
    return lo[order], hi[order], d[order]


def _bands(threshold: int) -> list[tuple[int, int]]:
    """(shift, width) of threshold + 1 bands covering the 64 bits, widths differing by at most one."""
    count = threshold + 1
    widths = [64 // count + (b < 64 % count) for b in range(count)]
    return [(sum(widths[:b]), w) for b, w in enumerate(widths)]


def _bucket_pairs(key: np.ndarray, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All pairs of positions with equal ``key``, in batches of about ``batch`` pairs (no Python loop per pair)."""
    n = len(key)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if n else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, n])
    after = np.repeat(starts + sizes, sizes) - np.arange(n) - 1  # partners behind each sorted position
    positions = np.flatnonzero(after)
    if not len(positions):
        return
    total = np.cumsum(after[positions])
    for block in np.split(positions, np.searchsorted(total, np.arange(batch, total[-1], batch), side="right")):
        if not len(block):
            continue
        count = after[block]
        left = np.repeat(block, count)
        step = np.arange(len(left)) - np.repeat(np.cumsum(count) - count, count) + 1
        yield order[left], order[left + step]


def find_duplicates(hashes: ImageHashes, split_of: np.ndarray, files: list[str], *, near_threshold: int = NEAR_BITS,
                    confirm_threshold: int = CONFIRM_BITS, min_contrast: float = MIN_CONTRAST) -> DuplicateSummary:
    """Identical and near duplicates across and within splits (``split_of``: index into SPLITS per image).

    Identical images form groups (one per digest) counted per split, so a thousand copies cost no thousand-squared
    pairs; near matching runs on one image per group.
    """
    _, first, group = np.unique(hashes.digest, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    count = np.zeros((len(first), len(SPLITS)), np.int64)
    np.add.at(count, (group, split_of), 1)
    member = np.full((len(first), len(SPLITS)), len(files), np.int64)  # first image of each group in each split
    np.minimum.at(member, (group, split_of), np.arange(len(files)))
    eligible = np.flatnonzero(hashes.contrast[first] >= min_contrast)
    reps = first[eligible]
    i, j, dist = near_pairs(hashes.h64[reps], near_threshold)
    wide = popcount(hashes.h256[reps[i]] ^ hashes.h256[reps[j]]).sum(axis=1) if len(i) else np.zeros(0, np.int64)
    ok = wide <= confirm_threshold
    pairs = (eligible[i[ok]], eligible[j[ok]], dist[ok])
    across = [_overlap(SPLITS.index(a), SPLITS.index(b), count, member, pairs, files) for a, b in ACROSS]
    within = {name: {"identical_pairs": int((count[:, s] * (count[:, s] - 1) // 2).sum()),
                     "near_pairs": int((count[pairs[0], s] * count[pairs[1], s]).sum())}
              for s, name in enumerate(SPLITS)}
    return DuplicateSummary(near_threshold, confirm_threshold, min_contrast,
                            int((hashes.contrast < min_contrast).sum()), int(len(i)), int((~ok).sum()), across, within)


def _overlap(a: int, b: int, count: np.ndarray, member: np.ndarray,
             pairs: tuple[np.ndarray, np.ndarray, np.ndarray], files: list[str]) -> SplitOverlap:
    """Images of split ``b`` with an identical or near copy in split ``a``, from group counts and group pairs."""
    g1, g2, dist = pairs
    in_a = count[:, a] > 0
    copied = in_a.copy()
    copied[g1[in_a[g2]]] = True
    copied[g2[in_a[g1]]] = True
    examples = [{"first": files[member[g, a]], "second": files[member[g, b]], "distance": 0, "identical": True}
                for g in np.flatnonzero(in_a & (count[:, b] > 0))[:EXAMPLES]]
    for k in np.argsort(dist, kind="stable"):
        if len(examples) >= EXAMPLES:
            break
        for x, y in ((g1[k], g2[k]), (g2[k], g1[k])):
            if count[x, a] and count[y, b]:
                examples.append({"first": files[member[x, a]], "second": files[member[y, b]],
                                 "distance": int(dist[k]), "identical": False})
                break
    return SplitOverlap(SPLITS[a], SPLITS[b], int((count[:, a] * count[:, b]).sum()),
                        int((count[g1, a] * count[g2, b] + count[g1, b] * count[g2, a]).sum()),
                        int(count[in_a, b].sum()), int(count[copied, b].sum()), examples)


# ---------------------------------------------------------------------------------------------------- actions

def advise(check: DatasetCheck, settings: Mapping[str, Any]) -> list[str]:
    """What the run will do about each finding, in the options' terms."""
    return [*_duplicate_actions(check.duplicates), *_size_actions(check, str(settings.get("data.resize", "stretch"))),
            *_channel_actions(check, str(settings.get("data.channels", "auto"))), *_balance_actions(check, settings),
            *_skip_actions(check.skipped)]


_RESIZE = {"stretch": "by stretching (data.resize: stretch; crop or pad keep the aspect ratio)",
           "crop": "after cropping the centre square (data.resize: crop; pad keeps the whole image, stretch "
                   "distorts it)",
           "pad": "after padding to a square (data.resize: pad; crop cuts the edges off, stretch distorts it)"}


def _size_actions(check: DatasetCheck, resize: str) -> list[str]:
    s, side = check.sizes, check.image_size
    if not s.distinct:
        return []
    if s.distinct == 1 and s.largest == (side, side):
        return [f"all images are {side}x{side}: used as they are"]
    how = _RESIZE.get(resize, f"(data.resize: {resize})") if s.not_square else ""
    width, height = s.largest
    head = f"all images are {width}x{height}: they are resized" if s.distinct == 1 else \
        f"images of {s.distinct} sizes (largest {width}x{height}) are resized"
    out = [f"{head} to {side}x{side} {how}".rstrip()]
    if s.not_square:
        out.append(f"{s.not_square} image(s) are not square (width/height {s.min_aspect:g} to {s.max_aspect:g})")
    if s.smaller:
        out.append(f"{s.smaller} images have a side under {side} pixels: they are upscaled (blurred); a smaller "
                   "data.image_size keeps their detail")
    return out


def _channel_actions(check: DatasetCheck, setting: str) -> list[str]:
    s, channels = check.sizes, check.channels
    total = sum(s.modes.values())
    gray, out = s.grayscale, []
    if total and gray == total:
        out.append(f"grayscale images: the model takes 1 channel (data.channels: {setting})" if channels == 1 else
                   f"all images are grayscale but the model takes {channels} identical channels "
                   f"(data.channels: {setting}); data.channels: 1 gives it one")
    elif gray:
        out.append(f"{gray} of {total} images are grayscale, {total - gray} in colour: the grayscale ones are repeated "
                   f"to {channels} channels (data.channels: {setting})" if channels != 1 else
                   f"{total - gray} colour images are made grayscale: the model takes 1 channel (data.channels: "
                   f"{setting}); data.channels: 3 keeps colour")
    elif total and channels == 1:
        out.append(f"colour images are made grayscale: the model takes 1 channel (data.channels: {setting}); "
                   "data.channels: auto or 3 keeps colour")
    deep = sum(c for b, c in s.bits.items() if int(b) > 8)
    if deep:
        out.append(f"{deep} images have more than 8 bits per channel: they are scaled to 8 bits")
    alpha = sum(c for m, c in s.modes.items() if m in _ALPHA_MODES)
    if alpha:
        out.append(f"{alpha} images have an alpha channel: it is dropped (transparent pixels keep their colour)")
    return out


def _balance_actions(check: DatasetCheck, settings: Mapping[str, Any]) -> list[str]:
    balance = str(settings.get("train.class_balance", "none"))
    select = str(settings.get("train.select_by", "accuracy"))
    out = []
    if check.imbalance >= 2:
        head = (f"classes are imbalanced {check.imbalance:.1f}:1 (smallest: {check.smallest_class} with "
                f"{check.smallest_count} train images)")
        if balance == "none":
            out.append(f"{head}; consider train.class_balance: loss or sampler, and train.select_by: macro_f1")
        else:
            tail = "" if select == "macro_f1" else "; consider train.select_by: macro_f1"
            out.append(f"{head}; train.class_balance: {balance} compensates{tail}")
    if check.smallest_count < 10:
        out.append(f"class {check.smallest_class} has only {check.smallest_count} train images: its scores are noisy "
                   "and the model may never learn it; add images")
    return out


def _skip_actions(skipped: Mapping[str, Any]) -> list[str]:
    corrupt, other = skipped.get("corrupt", 0), skipped.get("non_image", 0)
    if not (corrupt or other):
        return []
    example = f" (e.g. {skipped['corrupt_examples'][0]})" if skipped.get("corrupt_examples") else ""
    return [f"{corrupt} corrupt image(s){example} and {other} non-image file(s) are skipped; repair or remove them "
            "to use them"]


def _duplicate_actions(d: DuplicateSummary) -> list[str]:
    effect = {"test": "test accuracies are inflated", "val": "the validation accuracy that picks the best "
              "checkpoint and stops training is inflated"}
    out = [f"{o.images} {o.second} image(s) have a copy in {o.first} ({o.identical_images} identical, "
           f"{o.images - o.identical_images} near): {effect[o.second]}; remove the copies or keep each group of copies "
           "in one split (see the examples)" for o in d.across if o.images]
    if not out:
        out.append(f"no duplicates across splits (identical, or pHash within {d.near_threshold} of 64 bits)")
    within = {name: w["identical_pairs"] for name, w in d.within.items() if w["identical_pairs"]}
    if within:
        detail = ", ".join(f"{name} {n}" for name, n in within.items())
        out.append(f"{sum(within.values())} identical pairs within splits ({detail}): those images weigh double in "
                   "training and scoring; remove the copies unless intended")
    if d.low_contrast:
        out.append(f"{d.low_contrast} near-uniform images (coarse contrast under {d.min_contrast:g} grey levels) are "
                   "not compared for near duplicates (their hashes are noise); identical copies are still found")
    return out
