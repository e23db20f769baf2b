"""Why QONNX execution and Brevitas differ in the last float32 bits, and what makes them identical.

A quantized activation is round(x / s): when x lands within float32 rounding of a step boundary, a different
accumulation order (oneDNN in PyTorch, MLAS in ONNX Runtime under qonnx) rounds it the other way and every layer after
it sees a one-step change. With power-of-two scales (spec key ``scaling: power_of_two``) products and sums of
quantized values are exact in float32 (while they stay below 2^24), so the convolutions agree bit for bit; the
float BatchNorm affine remains the one place where the two runtimes can round differently, and folding it into the
convolutions before quantization (``fold_bn: true``) removes most of the rest (the folded conv bias stays float).

Usage: python benchmarks/studies/qonnx_parity_scales.py [--images 512]
       [--out benchmarks/results/qonnx_parity_scales.json]

Model: a residual CustomNet (stem 16, stages 32/64/64, 32x32 input, random weights, BN statistics randomised as after
training), converted with edgecnn's to_lowbit at w8a8 and w4a4 with float scales, with power-of-two scales, and
with power-of-two scales and every BatchNorm folded into its convolution;
logits of qonnx execution vs the Brevitas model on random normal inputs.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # conftest.randomize_bn
from _common import command, machine

BATCH = 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--out", default="benchmarks/results/qonnx_parity_scales.json")
    args = ap.parse_args()

    import numpy as np
    import torch
    from conftest import randomize_bn

    from edgecnn.compress.lowbit import to_lowbit
    from edgecnn.export.qonnx import export_qonnx, run_qonnx
    from edgecnn.models.customnet import CustomNet

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = CustomNet(num_classes=10, input_size=32, stem_channels=16, channels=[32, 64, 64])
    randomize_bn(model)
    model.eval()
    n = args.images - args.images % BATCH
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = {}
    with TemporaryDirectory() as tmp:
        for scales, extra in (("float", {}), ("power_of_two", {"scaling": "power_of_two"}),
                              ("power_of_two+bn_folded", {"scaling": "power_of_two", "fold_bn": True})):
            for precision in ("w8a8", "w4a4"):
                bits = int(precision[1])
                q = to_lowbit(model, {"default": {"w": bits, "a": bits}, **extra}, 32, calib=[x[:BATCH]])
                with torch.no_grad():
                    ref = q(x).numpy()
                path = export_qonnx(q, Path(tmp) / f"{scales.replace('+', '-')}-{precision}.qonnx.onnx", 32,
                                    batch=BATCH)
                out = np.concatenate([run_qonnx(path, x[i:i + BATCH].numpy()) for i in range(0, n, BATCH)])
                diff = np.abs(out - ref).max(1)
                rows[f"{scales}/{precision}"] = {
                    "images": n, "max_abs_diff": float(diff.max()), "images_identical": float((diff == 0).mean()),
                    "images_within_1e-4": float((diff <= 1e-4).mean()),
                    "top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
                    "max_abs_logit": float(np.abs(ref).max())}
                print(scales, precision, rows[f"{scales}/{precision}"], flush=True)
    result = {"benchmark": "qonnx_parity_scales", "command": command(),
              "machine": machine(), "model": "CustomNet stem16 [32,64,64] 32px",
              "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
