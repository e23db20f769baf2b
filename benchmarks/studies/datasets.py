"""Any dataset, not just EuroSAT: five datasets of different kinds through `edgecnn data` and `edgecnn run` with
edgecnn's default settings, and the digits protocol that showed the old augmentation defaults cost 4 points.

Usage: python benchmarks/studies/datasets.py [--data ../shared/data/eurosat] [--work /tmp/edgecnn-datasets]
       [--out benchmarks/results/datasets.json] [--only NAME ...]
Needs scikit-learn (`pip install scikit-learn`) for its bundled handwritten digits; nothing is downloaded.
Protocol (fixed before the run; test accuracy read once, nothing rerun after reading it):
- Datasets, written as ImageFolders under --work (never into the repository):
  * digits: scikit-learn's 1,797 grayscale 8x8 handwritten digits (values 0-16 scaled to 0-255), 10 classes, PNG;
  * eurosat-gray: 200 seeded images per EuroSAT class converted to 8-bit grayscale PNG;
  * eurosat-256x192: 200 seeded images per class resized (bilinear) to 256x192, JPEG quality 95: large, not square;
  * eurosat-imbalanced: class k (sorted order) keeps max(10, round(400 * 0.65**k)) images: 400 down to 10 (40:1);
  * eurosat-120: 120 classes by splitting each EuroSAT class into 12 (4 rotations x {as is, BGR, inverted}), 40
    source images per new class, each source image used once.
- Each: `edgecnn data DIR --json` (the split a default run makes), then `edgecnn run` on a config that names only
  the run, its output folder and data.root: every other setting is edgecnn's default.
- eurosat-imbalanced again with train.class_balance: loss and train.select_by: macro_f1 (accuracy and macro-F1).
- Digits protocol (the issue's): image_size 8, CustomNet stem 16, channels [32, 64], blocks 0, 30 epochs, precisions
  fp32, int8-ptq, w4a4; three runs: augmentation left to the defaults, flips/rotations on, flips/rotations off.
- `edgecnn data` on the whole EuroSAT development set (duplicates across the default split, and what it costs).
Reported: test accuracy and macro-F1 of every row, channels of the exported file, wall seconds, and the checks.
About 25 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, RESULTS, command, machine  # noqa: E402

DIGITS_MODEL = {"name": "customnet", "args": {"stem_channels": 16, "channels": [32, 64], "blocks": 0}}
DIGITS_AUGMENT = {"defaults": None, "flips-on": {"hflip": True, "vflip": True, "rot90": True},
                  "flips-off": {"hflip": False, "vflip": False, "rot90": False}}
PER_CLASS = 200


def _eurosat_files(source: Path, per_class: int | None, seed: int = 0) -> dict[str, list[Path]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for cls in sorted(p.name for p in source.iterdir() if p.is_dir()):
        files = sorted((source / cls).glob("*.jpg"))
        pick = rng.permutation(len(files))[:per_class] if per_class else range(len(files))
        out[cls] = [files[i] for i in sorted(pick)]
    return out


def write_digits(dst: Path) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = dst / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), "L").save(folder / f"{i:04d}.png")


def write_converted(dst: Path, source: Path, convert: Callable[[Any], Any], suffix: str,
                    counts: Callable[[int], int | None] = lambda k: PER_CLASS) -> None:
    from PIL import Image

    for k, (cls, files) in enumerate(_eurosat_files(source, None).items()):
        (dst / cls).mkdir(parents=True, exist_ok=True)
        keep = counts(k)
        chosen = _eurosat_files(source, keep)[cls] if keep else files
        for f in chosen:
            with Image.open(f) as im:
                convert(im).save(dst / cls / (f.stem + suffix), quality=95)


def write_120(dst: Path, source: Path, per_new_class: int = 40) -> None:
    import numpy as np
    from PIL import Image

    transforms = [(turn, colour) for turn in range(4) for colour in ("asis", "bgr", "inverted")]
    for cls, files in _eurosat_files(source, per_new_class * len(transforms)).items():
        for t, (turn, colour) in enumerate(transforms):
            folder = dst / f"{cls}-r{turn * 90}-{colour}"
            folder.mkdir(parents=True, exist_ok=True)
            for f in files[t::len(transforms)]:
                with Image.open(f) as im:
                    pixels = np.rot90(np.asarray(im.convert("RGB")), turn)
                if colour == "bgr":
                    pixels = pixels[..., ::-1]
                elif colour == "inverted":
                    pixels = 255 - pixels
                Image.fromarray(np.ascontiguousarray(pixels)).save(folder / (f.stem + ".png"))


def build_datasets(work: Path, source: Path) -> dict[str, Path]:
    from PIL import Image

    makers: dict[str, Callable[[Path], None]] = {
        "digits": write_digits,
        "eurosat-gray": lambda d: write_converted(d, source, lambda im: im.convert("L"), ".png"),
        "eurosat-256x192": lambda d: write_converted(
            d, source, lambda im: im.convert("RGB").resize((256, 192), Image.Resampling.BILINEAR), ".jpg"),
        "eurosat-imbalanced": lambda d: write_converted(d, source, lambda im: im.convert("RGB"), ".jpg",
                                                        lambda k: max(10, round(400 * 0.65 ** k))),
        "eurosat-120": lambda d: write_120(d, source),
    }
    roots = {}
    for name, make in makers.items():
        root = work / "data" / name
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            make(root)
            (root / ".complete").write_text("")
        roots[name] = root
    return roots


def _edgecnn(*args: str) -> tuple[int, float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgecnn", *args], capture_output=True, text=True)
    return done.returncode, time.perf_counter() - start, (done.stdout + done.stderr)[-2000:]


def check(root: Path, work: Path, name: str, image_size: int = 64) -> dict[str, Any]:
    out = work / "checks" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rc, seconds, tail = _edgecnn("data", str(root), "--image-size", str(image_size), "--json", str(out))
    if rc != 0:
        return {"exit_code": rc, "error": tail}
    return {"exit_code": rc, "wall_seconds": round(seconds, 1), "check": json.loads(out.read_text())}


def run(config: dict[str, Any], work: Path) -> dict[str, Any]:
    import yaml

    path = work / "configs" / f"{config['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    rc, seconds, tail = _edgecnn("run", str(path))
    run_dir = Path(config["output"]) / config["name"]
    row: dict[str, Any] = {"config": config, "exit_code": rc, "wall_seconds": round(seconds, 1)}
    if rc != 0:
        return {**row, "error": tail}
    results = json.loads((run_dir / "results.json").read_text())
    data = json.loads((run_dir / "data.json").read_text())
    keep = ("precision", "accuracy", "macro_f1", "params", "macs", "test_images", "fps_kv260", "fps_pynq-z1")
    row["rows"] = [{k: r.get(k) for k in keep if k in r} for r in results["rows"]] \
        if isinstance(results, dict) else [{k: r.get(k) for k in keep if k in r} for r in results]
    row["channels"] = data.get("channels")
    row["input_channels_of_files"] = sorted({_file_channels(f) for f in run_dir.rglob("*.onnx")})
    return row


def _file_channels(path: Path) -> int:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1].dim_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="The EuroSAT ImageFolder the derived datasets come from.")
    parser.add_argument("--work", default="/tmp/edgecnn-datasets", help="Where datasets and runs are written.")
    parser.add_argument("--out", default=str(RESULTS / "datasets.json"))
    parser.add_argument("--only", nargs="*", help="Parts to run: defaults, balanced, digits, eurosat (all without).")
    args = parser.parse_args()
    work, source = Path(args.work), Path(args.data)
    parts = set(args.only or ["defaults", "balanced", "digits", "eurosat"])
    result: dict[str, Any] = {"benchmark": "datasets", "command": command(), "machine": machine(),
                              "protocol": __doc__.split("Protocol")[1].strip(), "defaults": {}, "digits": {}}
    if Path(args.out).exists():  # parts run earlier stay
        result = {**json.loads(Path(args.out).read_text()), "command": command(), "machine": machine()}
    roots = build_datasets(work, source)
    runs = str(work / "runs")
    for name, root in roots.items():
        if "defaults" in parts:
            result["defaults"][name] = {"check": check(root, work, name),
                                        "run": run({"name": name, "output": runs, "data": {"root": str(root)}}, work)}
            _save(result, args.out)
    if "balanced" in parts:
        cfg = {"name": "eurosat-imbalanced-balanced", "output": runs,
               "data": {"root": str(roots["eurosat-imbalanced"])},
               "train": {"class_balance": "loss", "select_by": "macro_f1"}}
        result["imbalanced_balanced"] = run(cfg, work)
        _save(result, args.out)
    if "digits" in parts:
        for label, augment in DIGITS_AUGMENT.items():
            data: dict[str, Any] = {"root": str(roots["digits"]), "image_size": 8}
            if augment is not None:
                data["augment"] = augment
            cfg = {"name": f"digits-{label}", "output": runs, "seed": 0, "data": data, "model": DIGITS_MODEL,
                   "train": {"epochs": 30}, "precisions": ["fp32", "int8-ptq", "w4a4"]}
            result["digits"][label] = run(cfg, work)
            _save(result, args.out)
    if "eurosat" in parts:
        result["eurosat_check"] = check(source, work, "eurosat")
        _save(result, args.out)


def _save(result: dict[str, Any], out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
