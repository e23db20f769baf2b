"""The numeric format and memory layout of training, chosen by measuring them on the actual model.

A CPU flag does not say what is fast: bf16 autocast was 2.8x a plain fp32 loop on one AVX-512 BF16 machine and
0.9x on another of the same kind. With ``train.amp: auto`` and/or ``train.channels_last: auto`` the trainer times
a few optimizer steps of each candidate (fp32 / bf16 autocast x contiguous / channels_last on a CPU; fp16 too
on a GPU) on a copy of the model with random data at the real batch size, keeps the fastest, logs the measured
ratios and caches the choice per machine and model signature (the cache file sits in edgecnn's cache folder), so
a rerun does not measure again. Explicit values are honoured and never measured.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn.models.profile import input_channels

log = logging.getLogger(__name__)

#: ``timer(step) -> seconds`` for one call of ``step``; a test replaces it to make a candidate slow.
Timer = Callable[[Callable[[], None], "Numerics"], float]
DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Numerics:
    """One candidate: the autocast dtype (off = fp32) and the memory layout."""

    amp: str
    channels_last: bool

    @property
    def label(self) -> str:
        return f"{'fp32' if self.amp == 'off' else self.amp}/{'channels_last' if self.channels_last else 'contiguous'}"


@dataclass
class Choice:
    """The chosen numerics, the measured seconds per step of every candidate, and whether it came from the cache."""

    numerics: Numerics
    seconds_per_step: dict[str, float] = field(default_factory=dict)
    cached: bool = False
    measured: bool = True

    def to_dict(self) -> dict[str, Any]:
        fastest = min(self.seconds_per_step.values()) if self.seconds_per_step else None
        return {**asdict(self.numerics), "label": self.numerics.label, "measured": self.measured,
                "cached": self.cached, "seconds_per_step": self.seconds_per_step,
                "speed_vs_fastest": {k: round(fastest / v, 3) for k, v in self.seconds_per_step.items()}
                if fastest else {}}


def candidates(amp: str, channels_last: bool | str, device: torch.device) -> list[Numerics]:
    """Every combination the settings leave open (an explicit value is the only candidate on its axis)."""
    if amp == "auto":
        amps = ["off", "bf16", "fp16"] if device.type == "cuda" else ["off", "bf16"]
    else:
        amps = [amp]
    layouts = [False, True] if channels_last == "auto" else [bool(channels_last)]
    return [Numerics(a, cl) for a in amps for cl in layouts]


def _wall_timer(step: Callable[[], None], numerics: Numerics) -> float:
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


def measure(model: nn.Module, numerics: Numerics, batch: int, input_size: int, *, steps: int = 3, warmup: int = 2,
            timer: Timer = _wall_timer, device: torch.device | None = None) -> float:
    """Median seconds of one optimizer step (forward, backward, update) of a copy of ``model`` in ``numerics``."""
    device = device or torch.device("cpu")
    trial = copy.deepcopy(model).to(device).train()
    fmt = torch.channels_last if numerics.channels_last else torch.contiguous_format
    trial = trial.to(memory_format=fmt)
    opt = torch.optim.SGD(trial.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, input_channels(model), input_size, input_size, generator=gen)
    x = x.to(device).contiguous(memory_format=fmt)
    with torch.no_grad():  # eval mode: BatchNorm cannot train on one image whose maps are 1x1 (8 px inputs)
        out_dim = trial.eval()(x[:1]).shape[-1]
    trial.train()
    y = torch.randint(0, out_dim, (batch,), generator=gen).to(device)
    dtype = DTYPES[numerics.amp]

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(trial(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = [timer(step, numerics) for _ in range(warmup + steps)]
    return statistics.median(times[warmup:])


def machine_signature(device: torch.device) -> dict[str, Any]:
    """What makes a timing valid on this machine only: CPU model and flags, threads, torch, device."""
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
        flags = sorted({f for ln in lines if ln.startswith("flags") for f in ln.split(":", 1)[1].split()
                        if f.startswith(("avx512", "amx", "avx_vnni"))})
    except OSError:
        pass
    sig = {"cpu": cpu, "flags": flags, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "device": str(device)}
    if device.type == "cuda":
        sig["gpu"] = torch.cuda.get_device_name(device)
    return sig


def model_signature(model: nn.Module, batch: int, input_size: int) -> dict[str, Any]:
    """The model's class and parameter shapes, the batch size and the input size."""
    shapes = ";".join(f"{n}:{tuple(p.shape)}" for n, p in model.named_parameters())
    return {"model": type(model).__name__, "params": hashlib.sha256(shapes.encode()).hexdigest()[:16],
            "batch": batch, "input_size": input_size}


def cache_file() -> Path:
    return Path(os.environ.get("EDGECNN_CACHE", Path.home() / ".cache" / "edgecnn")) / "numerics.json"


def choose(model: nn.Module, amp: str, channels_last: bool | str, batch: int, input_size: int, *,
           device: torch.device | None = None, timer: Timer = _wall_timer, cache: Path | None = None,
           steps: int = 3, warmup: int = 2) -> Choice:
    """The fastest of the open candidates for this model (measured, or read back from the cache)."""
    device = device or torch.device("cpu")
    options = candidates(amp, channels_last, device)
    if len(options) == 1:
        return Choice(options[0], measured=False)
    cache = cache or cache_file()
    key = hashlib.sha256(json.dumps([machine_signature(device), model_signature(model, batch, input_size),
                                     [asdict(o) for o in options]], sort_keys=True).encode()).hexdigest()
    stored = _read_cache(cache)
    if key in stored:
        entry = stored[key]
        return Choice(Numerics(**entry["numerics"]), entry["seconds_per_step"], cached=True)
    timings = {o.label: measure(model, o, batch, input_size, steps=steps, warmup=warmup, timer=timer, device=device)
               for o in options}
    best = min(options, key=lambda o: timings[o.label])
    choice = Choice(best, {k: round(v, 5) for k, v in timings.items()})
    stored[key] = {"numerics": asdict(best), "seconds_per_step": choice.seconds_per_step}
    _write_cache(cache, stored)
    fastest = timings[best.label]
    log.info("numerics: %s chosen (%s)", best.label,
             ", ".join(f"{k} {fastest / v:.2f}x" for k, v in sorted(timings.items(), key=lambda kv: kv[1])))
    return choice


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError as exc:  # a read-only home: measure again next time, do not fail the training
        log.warning("numerics cache not written (%s)", exc)
