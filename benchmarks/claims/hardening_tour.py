"""A tour of bad inputs and faults, as a new user would meet them: each case runs the real `edgecnn` command in a
sandbox and is classified as clean or as a defect (a traceback or internal error, a silently wrong result, a hang,
or a file written outside the places the command may write).

Usage: python benchmarks/claims/hardening_tour.py [--only GROUP ...] [--timeout 120]
       [--out benchmarks/results/hardening_tour.json]
Protocol (fixed before the run): every case declares what a careful tool does (a one-line error with exit code 2,
success, or 130 for an interrupt) and, where a wrong number could slip through, a check of the result. A case is
clean when the exit code is the declared one, stderr holds no traceback, an error is one line naming the problem,
the check passes, the command ends within --timeout seconds, and nothing new appears in the sandbox outside its
allowed folders (runs/, cache/, out/). Groups: config, data, files, rundir, faults, search. About 15 minutes on
2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import RESULTS, command, machine  # noqa: E402

ALLOWED = ("runs", "cache", "out", "home")
CLASSES = ["AnnualCrop", "Forest", "Highway", "SeaLake"]


@dataclass
class Case:
    """One bad input or fault: how to set it up, the command, what a careful tool does."""

    group: str
    name: str
    argv: Callable[[Path], list[str]]  # the edgecnn arguments, given the sandbox
    expect: int = 2  # 2: a one-line error; 0: success; 130: an interrupt
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path, str], str | None] | None = None  # a wrong result, described; None when right
    interrupt_after: Callable[[Path], bool] | None = None  # send SIGINT once this holds
    kill_after: Callable[[Path], bool] | None = None  # SIGKILL once this holds, then rerun: expect resumes


@dataclass
class Outcome:
    group: str
    name: str
    verdict: str  # clean, traceback, internal_error, wrong_exit, wrong_result, hang, outside_write, not_one_line
    exit_code: int | None
    seconds: float
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ the sandbox

def tiny_folder(dst: Path, per_class: int = 8, size: int = 16) -> Path:
    """4 classes x ``per_class`` images of the bundled EuroSAT sample, resized to ``size`` px."""
    from PIL import Image

    from edgecnn.data.datasets import SAMPLE_ROOT

    for cls in CLASSES:
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for f in sorted((SAMPLE_ROOT / cls).iterdir())[:per_class]:
            with Image.open(f) as im:
                im.convert("RGB").resize((size, size)).save(dst / cls / (f.stem + ".png"))
    return dst


def base_config(box: Path, **changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "tour", "output": str(box / "runs"), "seed": 0, "targets": [], "precisions": ["fp32"],
        "data": {"root": str(box / "inputs" / "data"), "image_size": 16, "split": {"val": 0.25, "test": 0.25}},
        "model": {"name": "customnet", "args": {"stem_channels": 4, "channels": [8], "blocks": 0}},
        "train": {"epochs": 1, "batch_size": 8, "amp": "off", "channels_last": False},
        "evaluate": {"latency_batches": [1], "latency_repeats": 3}}
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return cfg


_DELETE = object()


def write_config(box: Path, cfg: Any, name: str = "exp.yaml", text: str | None = None) -> Path:
    import yaml

    path = box / "inputs" / name
    path.write_text(text if text is not None else yaml.safe_dump(cfg, sort_keys=False))
    return path


def trained(box: Path) -> Path:
    """A finished tiny run in the sandbox (its best checkpoint)."""
    run(box, ["run", str(write_config(box, base_config(box, name="base"), "base.yaml"))], 300)
    return box / "runs" / "base" / "train" / "best.safetensors"


def run(box: Path, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGECNN_CACHE": str(box / "cache"), "HOME": str(box / "home"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edgecnn", "--quiet", *argv], cwd=box / "out", env=env,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(box: Path) -> dict[str, int]:
    """Every file outside the allowed folders (the inputs included: a command must not write into the data) with
    its modification time."""
    out = {}
    for p in box.rglob("*"):
        if p.parts[len(box.parts)] in ALLOWED or p.is_dir() or p.is_fifo():
            continue
        try:
            out[str(p.relative_to(box))] = p.stat().st_mtime_ns
        except OSError:
            continue
    return out


# ------------------------------------------------------------------------------------------------ running a case

def classify(case: Case, done: subprocess.CompletedProcess | None, seconds: float, box: Path,
             before: dict[str, int]) -> Outcome:
    if done is None:
        return Outcome(case.group, case.name, "hang", None, seconds, "did not end within the timeout")
    err = done.stderr
    new = {k for k, v in snapshot(box).items() if before.get(k) != v}
    verdict, detail = "clean", ""
    if "Traceback (most recent call last)" in err:
        verdict, detail = "traceback", err.strip().splitlines()[-1][:300]
    elif done.returncode == 1 and "internal error" in err:
        verdict, detail = "internal_error", err.strip().splitlines()[-1][:300]
    elif done.returncode != case.expect:
        verdict, detail = "wrong_exit", f"exit {done.returncode}, expected {case.expect}: {err.strip()[-300:]}"
    elif case.expect == 2 and len([ln for ln in err.strip().splitlines() if ln.startswith("error:")]) != 1 \
            and "Usage:" not in err:  # typer's own usage errors (a bad option value) are clean too
        verdict, detail = "not_one_line", err.strip()[-300:]
    elif new:
        verdict, detail = "outside_write", ", ".join(sorted(new)[:5])
    elif case.check is not None and (problem := case.check(box, done.stdout + err)):
        verdict, detail = "wrong_result", problem
    return Outcome(case.group, case.name, verdict, done.returncode, round(seconds, 1), detail)


def _default_sigint() -> None:
    """A tour started in the background (nohup ... &) ignores SIGINT, and its children would inherit that: give
    the command Python's usual Ctrl-C, as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_case(case: Case, template: Path, work: Path, timeout: float) -> Outcome:
    box = work / f"{case.group}-{case.name}"
    shutil.copytree(template, box, symlinks=True)
    if case.setup is not None:
        case.setup(box)
    argv = case.argv(box)  # may write its config into inputs/: part of the set-up
    before = snapshot(box)
    env = {**os.environ, "EDGECNN_CACHE": str(box / "cache"), "HOME": str(box / "home"), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "edgecnn", "--quiet", *argv], cwd=box / "out", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)
    trigger = case.interrupt_after or case.kill_after
    if trigger is not None:
        while proc.poll() is None and time.perf_counter() - start < timeout and not trigger(box):
            time.sleep(0.05)
        if proc.poll() is None:
            if case.interrupt_after is not None:
                proc.send_signal(signal.SIGINT)
            else:
                os.killpg(proc.pid, signal.SIGKILL)
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout - (time.perf_counter() - start)))
        done: subprocess.CompletedProcess | None = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        done = None
    if case.kill_after is not None and done is not None:  # the kill was the fault: the rerun must resume cleanly
        done = run(box, argv, timeout)
    outcome = classify(case, done, time.perf_counter() - start, box, before)
    shutil.rmtree(box, ignore_errors=True)
    return outcome


# ------------------------------------------------------------------------------------------------ the cases

def _cfg_case(label: str, expect: int = 2, dry: bool = True, text: str | None = None, **changes: Any) -> Case:
    """A config file with ``changes`` (dotted with __) or the raw ``text``, run (or dry-run)."""
    def argv(box: Path) -> list[str]:
        path = write_config(box, base_config(box, **changes), text=text)
        return ["run", str(path), *(["--dry-run"] if dry else [])]
    return Case("config", label, argv, expect)


def config_cases() -> list[Case]:
    bad_values = {
        "train__epochs": [0, -1, "ten", 1.5], "train__batch_size": [0, -8, "big"], "train__lr": [0, -0.1, "fast"],
        "train__optimizer": ["adam"], "train__scheduler": ["linear"], "train__label_smoothing": [1.0, -0.1],
        "train__amp": ["yes"], "train__device": ["tpu"], "train__time_limit_min": [0, -1],
        "data__image_size": [4, 5000, "big"], "data__split__val": [1.0, -0.1], "data__split__test": [0.95],
        "data__normalize": ["zscore"], "data__channels": [2, "rgb"], "data__resize": ["squash"],
        "data__augment__jitter": [0.9], "data__augment__crop_pad": [99], "data__limit_per_class": [0],
        "seed": ["abc", -1], "precisions": [["int4"], "fp32"], "targets": [["zcu999"]],
        "model__name": ["resnet1000"], "model__args": [{"stem_chanels": 8}, {"channels": "wide"}],
        "name": ["../../x", "/abs", ".hidden", "", "x" * 300], "output": [123],
        "lowbit": [{"variants": ["w9a9"]}, {"variants": ["../x"]}, {"variants": []}],
        "train__progressive": [{"start": 64}],
        "evaluate__latency_batches": [[0]], "evaluate__backends": [["tensorflow"]],
    }
    cases = [_cfg_case(f"{key}={value!r}"[:60], **{key: value}) for key, values in bad_values.items()
             for value in values]
    cases += [_cfg_case("unknown top-level key", unknown_key=1), _cfg_case("unknown train key", train__lrr=0.1),
              _cfg_case("models label ../", models=[{"name": "lenet5", "label": "../x"}]),
              _cfg_case("two models one label", models=[{"name": "lenet5"}, {"name": "lenet5"}]),
              _cfg_case("invalid YAML", text="name: [unclosed\n"),
              _cfg_case("top level a list", text="- a\n- b\n"),
              _cfg_case("binary file", text="\x00\x01\x02\xff"),
              _cfg_case("python tag", text="name: !!python/object/apply:os.system ['true']\n"),
              _cfg_case("alias bomb", text="a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
                  f"l{i}: &l{i} [{', '.join(['*a' if i == 0 else f'*l{i - 1}'] * 10)}]\n" for i in range(8))),
              _cfg_case("self alias", text="a: &a [*a]\n"),
              _cfg_case("nan lr", text="train: {lr: .nan}\n"),
              _cfg_case("inf epochs", text="train: {epochs: .inf}\n"),
              _cfg_case("huge int", text="train: {epochs: 100000000000000000000000}\n"),
              _cfg_case("empty file is the defaults", expect=0, text=""),
              _cfg_case("valid dry run", expect=0),
              Case("config", "missing config file", lambda b: ["run", str(b / "inputs" / "nope.yaml")]),
              Case("config", "config is a folder", lambda b: ["run", str(b / "inputs")]),
              Case("config", "--data missing", lambda b: ["run", str(write_config(b, base_config(b))),
                                                          "--data", str(b / "nope")]),
              Case("config", "--name with slash", lambda b: ["run", str(write_config(b, base_config(b))),
                                                             "--name", "a/b", "--dry-run"]),
              Case("config", "output is a file",
                   lambda b: ["run", str(write_config(b, base_config(b, output=str(b / "inputs" / "afile"))))],
                   setup=lambda b: (b / "inputs" / "afile").write_text("x")),
              Case("config", "--nproc 99", lambda b: ["train", str(write_config(b, base_config(b))),
                                                      "--nproc", "99"]),
              Case("config", "--nproc 0", lambda b: ["train", str(write_config(b, base_config(b))),
                                                     "--nproc", "0"]),
              Case("config", "batch smaller than ranks",
                   lambda b: ["train", str(write_config(b, base_config(b, train__batch_size=1))), "--nproc", "2"])]
    return cases


def _data_case(name: str, setup: Callable[[Path], None], expect: int = 0, command_: str = "data",
               check: Callable[[Path, str], str | None] | None = None) -> Case:
    """``setup`` changes the sandbox's data folder; then `edgecnn data` on it (or a full tiny run)."""
    def argv(box: Path) -> list[str]:
        data = box / "inputs" / "data"
        if command_ == "data":
            return ["data", str(data), "--image-size", "16", "--json", str(box / "out" / "check.json")]
        return ["run", str(write_config(box, base_config(box)))]
    return Case("data", name, argv, expect, setup=setup, check=check)


def _write(rel: str, content: bytes) -> Callable[[Path], None]:
    def setup(box: Path) -> None:
        path = box / "inputs" / "data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return setup


def _image(rel: str, mode: str, size: tuple[int, int], fmt: str = "PNG") -> Callable[[Path], None]:
    def setup(box: Path) -> None:
        import numpy as np
        from PIL import Image

        bands = len(Image.new(mode, (1, 1)).getbands())
        pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], bands), dtype=np.uint8)
        im = Image.fromarray(pixels[..., 0] if bands == 1 else pixels[..., :3]).convert(mode)
        im.save(box / "inputs" / "data" / rel, fmt)
    return setup


def _replace_class_content(box: Path) -> None:
    """Swap two classes' images under the same names, keeping sizes where they match and mtimes."""
    data = box / "inputs" / "data"
    a, b = sorted((data / CLASSES[0]).iterdir()), sorted((data / CLASSES[1]).iterdir())
    for x, y in zip(a, b):
        sx, sy = x.stat(), y.stat()
        bx, by = x.read_bytes(), y.read_bytes()
        x.write_bytes(by)
        y.write_bytes(bx)
        os.utime(x, ns=(sx.st_atime_ns, sx.st_mtime_ns))
        os.utime(y, ns=(sy.st_atime_ns, sy.st_mtime_ns))


def data_cases() -> list[Case]:
    c0 = CLASSES[0]
    return [
        _data_case("missing folder", lambda b: shutil.rmtree(b / "inputs" / "data"), expect=2),
        _data_case("file instead of folder", lambda b: (shutil.rmtree(b / "inputs" / "data"),
                                                         (b / "inputs" / "data").write_text("x")), expect=2),
        _data_case("no class folders", lambda b: [shutil.rmtree(p) for p in (b / "inputs" / "data").iterdir()],
                   expect=2),
        _data_case("one class", lambda b: [shutil.rmtree(b / "inputs" / "data" / c) for c in CLASSES[1:]],
                   expect=2),
        _data_case("empty class", lambda b: (b / "inputs" / "data" / "Empty").mkdir(), expect=2),
        _data_case("corrupt png", _write(f"{c0}/bad.png", b"\x89PNG\r\n\x1a\n garbage")),
        _data_case("zero-byte jpg", _write(f"{c0}/zero.jpg", b"")),
        _data_case("text file", _write(f"{c0}/notes.txt", b"hello")),
        _data_case("truncated jpeg", _write(f"{c0}/cut.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")),
        _data_case("fifo named jpg", lambda b: os.mkfifo(b / "inputs" / "data" / c0 / "pipe.jpg")),
        _data_case("link loop", lambda b: os.symlink("loop.png", b / "inputs" / "data" / c0 / "loop.png")),
        _data_case("broken link", lambda b: os.symlink("/nonexistent.png", b / "inputs" / "data" / c0 / "x.png")),
        _data_case("class links back", lambda b: os.symlink(b / "inputs" / "data", b / "inputs" / "data" / "Loop")),
        _data_case("16-bit png", _image(f"{c0}/deep.png", "I;16", (16, 16))),
        _data_case("rgba png", _image(f"{c0}/alpha.png", "RGBA", (16, 16))),
        _data_case("palette gif", _image(f"{c0}/pal.gif", "P", (16, 16), "GIF")),
        _data_case("cmyk jpeg", _image(f"{c0}/cmyk.jpg", "CMYK", (16, 16), "JPEG")),
        _data_case("grayscale among rgb", _image(f"{c0}/gray.png", "L", (16, 16))),
        _data_case("1x1 image", _image(f"{c0}/dot.png", "RGB", (1, 1))),
        _data_case("very wide image", _image(f"{c0}/wide.png", "RGB", (400, 4))),
        _data_case("hidden files only extra", _write(f"{c0}/.DS_Store", b"junk")),
        _data_case("non-utf8 name", lambda b: (b / "inputs" / "data" / c0 / os.fsdecode(b"bad\xff.png")).write_bytes(
            (sorted((b / "inputs" / "data" / c0).iterdir())[0]).read_bytes())),
        _data_case("decompression bomb header", _write(f"{c0}/bomb.png", _bomb_png())),
        _data_case("exact duplicate across classes", lambda b: shutil.copy(
            sorted((b / "inputs" / "data" / c0).iterdir())[0], b / "inputs" / "data" / CLASSES[1] / "dup.png")),
        _data_case("all grayscale: one channel", lambda b: _all_gray(b), command_="run",
                   check=_channels_are(1)),
        _data_case("run with corrupt files skips them", _write(f"{c0}/bad.png", b"garbage"), command_="run"),
    ]


def _bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + \
        chunk(b"IEND", b"")


def _all_gray(box: Path) -> None:
    from PIL import Image

    for f in (box / "inputs" / "data").rglob("*.png"):
        with Image.open(f) as im:
            gray = im.convert("L")
        gray.save(f)


def _channels_are(n: int) -> Callable[[Path, str], str | None]:
    def check(box: Path, _: str) -> str | None:
        import onnx

        files = list((box / "runs" / "tour").rglob("*.onnx"))
        found = {onnx.load(str(f), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1].dim_value
                 for f in files}
        return None if files and found == {n} else f"exported files take {sorted(found)} channels, not {n}"
    return check


BASE_CKPT = "runs/base/train/best.safetensors"
BASE_ONNX = "runs/base/fp32.onnx"


def _in(box: Path, rel: str) -> str:
    return str(box / rel)


def _file_case(name: str, argv: Callable[[Path], list[str]], setup: Callable[[Path], None] | None = None,
               expect: int = 2, check: Callable[[Path, str], str | None] | None = None) -> Case:
    return Case("files", name, argv, expect, setup=setup, check=check)


def _copy_onnx(box: Path, mutate: Callable[[Any], None], name: str = "m.onnx") -> None:
    import onnx

    proto = onnx.load(str(box / BASE_ONNX))
    mutate(proto)
    onnx.save(proto, str(box / "inputs" / name))


def _nan_weight(proto: Any) -> None:
    import numpy as np
    from onnx import numpy_helper

    t = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    a = numpy_helper.to_array(t).copy()
    a.flat[0] = np.nan
    t.CopyFrom(numpy_helper.from_array(a, t.name))


def _meta_size(proto: Any) -> None:
    for prop in proto.metadata_props:
        if prop.key == "edgecnn":
            meta = json.loads(prop.value)
            meta["input_size"] = 64
            prop.value = json.dumps(meta)


def file_cases() -> list[Case]:
    data = "inputs/data"
    ev = lambda rel: (lambda b: ["eval", _in(b, rel), "--data", _in(b, data)])  # noqa: E731
    return [
        _file_case("eval missing model", ev("inputs/nope.onnx")),
        _file_case("eval a folder", ev("inputs")),
        _file_case("eval text as onnx", ev("inputs/t.onnx"), lambda b: (b / "inputs" / "t.onnx").write_text("hi")),
        _file_case("eval truncated onnx", ev("inputs/cut.onnx"), lambda b: (b / "inputs" / "cut.onnx").write_bytes(
            (b / BASE_ONNX).read_bytes()[:500])),
        _file_case("eval nan weights", ev("inputs/m.onnx"), lambda b: _copy_onnx(b, _nan_weight)),
        _file_case("eval metadata of another size", ev("inputs/m.onnx"), lambda b: _copy_onnx(b, _meta_size)),
        _file_case("eval garbage tflite", ev("inputs/g.tflite"), lambda b: (
            (b / "inputs" / "g.tflite").write_bytes(b"TFL3xx"), (b / "inputs" / "g.tflite.json").write_text("{}"))),
        _file_case("eval truncated tflite json", ev("inputs/g.tflite"), lambda b: (
            (b / "inputs" / "g.tflite").write_bytes(b"TFL3xx"), (b / "inputs" / "g.tflite.json").write_text('{"a'))),
        _file_case("eval garbage safetensors", ev("inputs/g.safetensors"),
                   lambda b: (b / "inputs" / "g.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")),
        _file_case("eval huge safetensors header", ev("inputs/h.safetensors"),
                   lambda b: (b / "inputs" / "h.safetensors").write_bytes((2**60).to_bytes(8, "little") + b"{")),
        _file_case("eval classes not the model's",
                   lambda b: ["eval", _in(b, BASE_CKPT), "--data", _in(b, "inputs/other")],
                   lambda b: [shutil.copytree(b / data / c, b / "inputs" / "other" / f"x{c}") for c in CLASSES[:2]]),
        _file_case("eval unknown backend", lambda b: ["eval", _in(b, BASE_ONNX), "--data", _in(b, data),
                                                      "--backend", "tensorflow"]),
        _file_case("eval batch size 0", lambda b: ["eval", _in(b, BASE_ONNX), "--data", _in(b, data),
                                                   "--batch-size", "0"]),
        _file_case("eval good onnx", lambda b: ["eval", _in(b, BASE_ONNX), "--data", _in(b, data), "--json"],
                   expect=0, check=_eval_accuracy_sane),
        _file_case("eval good checkpoint", lambda b: ["eval", _in(b, BASE_CKPT), "--data", _in(b, data)], expect=0),
        _file_case("bench missing", lambda b: ["bench", _in(b, "inputs/nope.onnx")]),
        _file_case("bench unknown backend", lambda b: ["bench", _in(b, BASE_ONNX), "--backend", "cuda-magic"]),
        _file_case("bench batch 0", lambda b: ["bench", _in(b, BASE_ONNX), "--batch", "0"]),
        _file_case("bench good", lambda b: ["bench", _in(b, BASE_ONNX), "--batch", "1", "--repeats", "3"], expect=0),
        _file_case("estimate missing", lambda b: ["estimate", _in(b, "inputs/nope.onnx"), "--target", "kv260"]),
        _file_case("estimate unknown target", lambda b: ["estimate", _in(b, BASE_ONNX), "--target", "zcu999"]),
        _file_case("estimate text file", lambda b: ["estimate", _in(b, "inputs/t.onnx"), "--target", "kv260"],
                   lambda b: (b / "inputs" / "t.onnx").write_text("hi")),
        _file_case("estimate negative fps", lambda b: ["estimate", _in(b, BASE_ONNX), "--target", "zcu104-finn",
                                                       "--fps", "-5"]),
        _file_case("estimate good", lambda b: ["estimate", _in(b, BASE_ONNX), "--target", "kv260"], expect=0),
        _file_case("export unknown format", lambda b: ["export", _in(b, BASE_CKPT), "--format", "pt"]),
        _file_case("export to a path under a file", lambda b: ["export", _in(b, BASE_CKPT), "--out",
                                                               _in(b, "inputs/afile/m.onnx")],
                   lambda b: (b / "inputs" / "afile").write_text("x")),
        _file_case("quantize unknown precision", lambda b: ["quantize", _in(b, BASE_CKPT), "--precision", "int3"]),
        _file_case("quantize calib 0", lambda b: ["quantize", _in(b, BASE_CKPT), "--precision", "int8-ptq",
                                                  "--calib", "0"]),
        _file_case("quantize calib beyond the split", lambda b: ["quantize", _in(b, BASE_CKPT), "--precision",
                                                                 "int8-ptq", "--calib", "100000"]),
        _file_case("quantize entropy 37 images", lambda b: ["quantize", _in(b, BASE_CKPT), "--precision", "int8-ptq",
                                                            "--calib", "7", "--method", "entropy", "--out-dir",
                                                            _in(b, "out/q")], expect=0),
        _file_case("quantize missing bits file", lambda b: ["quantize", _in(b, BASE_CKPT), "--precision", "w4a4",
                                                            "--bits", _in(b, "inputs/nope.yaml")]),
        _file_case("prune ratio above 1", lambda b: ["prune", _in(b, BASE_CKPT), "--ratio", "1.5"]),
        _file_case("prune unknown method", lambda b: ["prune", _in(b, BASE_CKPT), "--method", "magic"]),
    ]


def _eval_accuracy_sane(box: Path, out: str) -> str | None:
    start = out.find("{")
    try:
        report = json.loads(out[start:out.rfind("}") + 1])
    except ValueError:
        return "no JSON report"
    return None if 0 <= report.get("accuracy", -1) <= 1 and report.get("n") == 32 else f"report {report}"


def _rundir_case(name: str, setup: Callable[[Path], None], expect: int = 0,
                 check: Callable[[Path, str], str | None] | None = None, **changes: Any) -> Case:
    """A rerun of the finished base run after ``setup`` changed something in it or around it."""
    return Case("rundir", name, lambda b: ["run", str(write_config(b, base_config(b, name="base", **changes),
                                                                   "base.yaml"))], expect, setup=setup, check=check)


def _base(box: Path) -> Path:
    return box / "runs" / "base"


def _edit_json(rel: str, edit: Callable[[Any], None]) -> Callable[[Path], None]:
    def setup(box: Path) -> None:
        path = _base(box) / rel
        record = json.loads(path.read_text())
        edit(record)
        path.write_text(json.dumps(record))
    return setup


def _accuracy_is_measured(box: Path, _: str) -> str | None:
    """The rerun's fp32 accuracy is what the model scores, not an edited number."""
    import csv

    with open(_base(box) / "results.csv") as f:
        row = next(csv.DictReader(f))
    return None if float(row["accuracy"]) < 2 else f"reported accuracy {row['accuracy']}"


def _split_follows(seed: int) -> Callable[[Path, str], str | None]:
    def check(box: Path, _: str) -> str | None:
        record = json.loads((_base(box) / "split.json").read_text())
        return None if record.get("seed") == seed else f"split.json still drawn with seed {record.get('seed')}"
    return check


def _retrained(box: Path, out: str) -> str | None:
    return None if list(_base(box).glob("train.prev-*")) else "the train stage was not run again"


def rundir_cases() -> list[Case]:
    def set_accuracy(record: dict) -> None:
        record["outputs"]["metrics"]["accuracy"] = 7.0

    def variant_record(box: Path) -> str:
        return str(next((_base(box) / "variants").glob("*/stage.json")).relative_to(_base(box)))

    return [
        _rundir_case("rerun unchanged", lambda b: None),
        _rundir_case("changed seed draws a new split", lambda b: None, check=_split_follows(1), seed=1),
        _rundir_case("changed split fractions", lambda b: None, check=_retrained,
                     data__split={"val": 0.5, "test": 0.25}),
        _rundir_case("changed limit", lambda b: None, check=_retrained, data__limit_per_class=6),
        _rundir_case("images replaced under the same names", _replace_class_content, check=_retrained),
        _rundir_case("edited variant accuracy", lambda b: _edit_json(variant_record(b), set_accuracy)(b),
                     check=_accuracy_is_measured),
        _rundir_case("deleted best checkpoint", lambda b: (_base(b) / "train" / "best.safetensors").unlink(),
                     check=_retrained),
        _rundir_case("deleted results.json", lambda b: (_base(b) / "results.json").unlink()),
        _rundir_case("corrupt split.json is kept aside and drawn again",  # seeded: the same files, nothing rerun
                     lambda b: (_base(b) / "split.json").write_text("{"),
                     check=lambda b, _: None if (_base(b) / "split.prev-1.json").exists() else "no split.prev-1.json"),
        _rundir_case("split lists a missing file", lambda b: next((b / "inputs" / "data" / CLASSES[0]).iterdir())
                     .unlink(), expect=2),
        _rundir_case("corrupt stage.json", lambda b: (_base(b) / "train" / "stage.json").write_text("{oops"),
                     check=_retrained),
        _rundir_case("garbage lock file", lambda b: (_base(b) / ".lock").write_bytes(b"\x00junk")),
        _rundir_case("lock of a live process", _live_lock, expect=2),
        _rundir_case("deleted predictions", lambda b: [p.unlink() for p in _base(b).rglob("predictions.npy")]),
        _rundir_case("truncated cache file", _truncate_cache),
        _rundir_case("corrupt cache metadata",
                     lambda b: [p.write_text("[") for p in (b / "cache").glob("images-*.json")]),
        _rundir_case("zeroed cache rows", _zero_cache),
    ]


def _live_lock(box: Path) -> None:
    import socket

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (_base(box) / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": "now"}))


def _truncate_cache(box: Path) -> None:
    for npy in (box / "cache").glob("images-*.npy"):
        with open(npy, "r+b") as f:
            f.truncate(npy.stat().st_size // 2)


def _zero_cache(box: Path) -> None:
    for npy in (box / "cache").glob("images-*.npy"):
        size = npy.stat().st_size
        with open(npy, "r+b") as f:
            f.seek(size // 2)
            f.write(bytes(size - size // 2))


def _epoch_done(n: int, run: str = "tour") -> Callable[[Path], bool]:
    def ready(box: Path) -> bool:
        last = box / "runs" / run / "train" / "last.json"
        try:
            return json.loads(last.read_text()).get("epoch", -1) >= n
        except (OSError, ValueError):
            return False
    return ready


def _file_exists(pattern: str) -> Callable[[Path], bool]:
    return lambda box: any((box / "runs").glob(pattern))


def _same_as_uninterrupted(run_name: str) -> Callable[[Path, str], str | None]:
    """The resumed run's history and best weights equal an uninterrupted run's (bit for bit)."""
    def check(box: Path, _: str) -> str | None:
        import hashlib

        cfg = json.loads(json.dumps(base_config(box, name="reference", train__epochs=4)))
        run(box, ["run", str(write_config(box, cfg, "ref.yaml"))], 300)
        got, ref = box / "runs" / run_name / "train", box / "runs" / "reference" / "train"
        h = [json.loads((d / "history.json").read_text()) for d in (got, ref)]
        strip = [[{k: v for k, v in r.items() if k in ("epoch", "train_loss", "val_loss", "val_acc")} for r in x]
                 for x in h]
        if strip[0] != strip[1]:
            return "the resumed history differs from an uninterrupted run's"
        from safetensors.torch import load_file

        a, b = (load_file(str(d / "best.safetensors")) for d in (got, ref))  # the weights (names differ in meta)
        same = a.keys() == b.keys() and all(hashlib.sha256(a[k].numpy().tobytes()).digest()
                                            == hashlib.sha256(b[k].numpy().tobytes()).digest() for k in a)
        return None if same else "the resumed best weights differ from an uninterrupted run's"
    return check


def fault_cases() -> list[Case]:
    longer = {"train__epochs": 4, "data__root": None}

    def cfg(box: Path) -> list[str]:
        return ["run", str(write_config(box, base_config(box, **{**longer, "data__root": str(
            box / "inputs" / "data")})))]

    return [
        Case("faults", "kill -9 after epoch 1 resumes bit-identically", cfg, 0, kill_after=_epoch_done(1),
             check=_same_as_uninterrupted("tour")),
        Case("faults", "kill -9 after epoch 2 resumes bit-identically", cfg, 0, kill_after=_epoch_done(2),
             check=_same_as_uninterrupted("tour")),
        Case("faults", "Ctrl-C during training exits 130", cfg, 130, interrupt_after=_epoch_done(1)),
        Case("faults", "kill -9 while the variant is measured", cfg, 0, kill_after=_file_exists("tour/variants/*")),
        Case("faults", "kill -9 while the report is written", cfg, 0, kill_after=_file_exists("tour/report")),
    ]


def _search_case(name: str, search: dict[str, Any], expect: int = 2, extra: tuple[str, ...] = (),
                 check: Callable[[Path, str], str | None] | None = None) -> Case:
    def argv(box: Path) -> list[str]:
        cfg = base_config(box, search={"epochs": 1, "trials": 1, **search})
        return ["search", str(write_config(box, cfg)), *extra]
    return Case("search", name, argv, expect, check=check)


def search_cases() -> list[Case]:
    lr = {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}
    return [
        _search_case("no search section", {}, extra=()),
        _search_case("empty space", {"space": {}}),
        _search_case("unknown space key", {"space": {"train.lrr": [0.1]}}),
        _search_case("misspelled model argument", {"space": {"model.args.stem_chanels": [4, 8]}}),
        _search_case("high below low", {"space": {"train.lr": {"low": 1, "high": 0.1}}}),
        _search_case("bad storage url", {"space": lr, "storage": "notaurl"}),
        _search_case("unreachable postgres", {"space": lr, "storage": "postgresql://x@127.0.0.1:1/none"}),
        _search_case("bad objective", {"space": lr, "objectives": ["speed"]}),
        _search_case("study name with slash", {"space": lr, "study": "../x"}),
        _search_case("export-best under a file", {"space": lr}, extra=("--export-best", "/dev/null/best.yaml")),
        _search_case("list-valued choices", {"space": {"model.args.channels": {"choices": [[4], [4, 8]]}},
                                             "trials": 2}, expect=0),
        _search_case("workers beyond the cores", {"space": lr, "trials": 2, "workers": 64}, expect=0),
        _search_case("trials 0", {"space": lr}, extra=("--trials", "0")),
        _search_case("a finished study runs no more", {"space": lr}, expect=0),
    ]


GROUPS: dict[str, Callable[[], list[Case]]] = {"config": config_cases, "data": data_cases, "files": file_cases,
                                               "rundir": rundir_cases, "faults": fault_cases,
                                               "search": search_cases}


def build_template(root: Path) -> Path:
    """The sandbox every case starts from: a tiny dataset, a finished tiny run with its fp32 ONNX, empty folders."""
    template = root / "template"
    for name in ("inputs", "runs", "cache", "out", "home"):
        (template / name).mkdir(parents=True)
    tiny_folder(template / "inputs" / "data")
    trained(template)
    onnx = next((template / "runs" / "base" / "variants").glob("*/model.onnx"))
    shutil.copy(onnx, template / BASE_ONNX)
    return template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(GROUPS), help="Groups to run (all without).")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", default=str(RESULTS / "hardening_tour.json"))
    args = parser.parse_args()
    cases = [c for g in (args.only or GROUPS) for c in GROUPS[g]()]
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="edgecnn-tour-") as tmp:
        template = build_template(Path(tmp))
        for i, case in enumerate(cases, 1):
            outcome = run_case(case, template, Path(tmp), args.timeout)
            outcomes.append(outcome)
            print(f"[{i}/{len(cases)}] {outcome.verdict:14s} {case.group}/{case.name} {outcome.detail[:150]}",
                  flush=True)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.verdict] = counts.get(o.verdict, 0) + 1
    result = {"benchmark": "hardening_tour", "command": command(), "machine": machine(), "cases": len(outcomes),
              "verdicts": counts, "outcomes": [o.__dict__ for o in outcomes]}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
