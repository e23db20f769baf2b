"""What test-time views buy, on the validation split only: saved trained checkpoints scored with no views, the
horizontal flip, the four flips and the eight symmetries of the square (export.tta: none / hflip / flips / d4).

The checkpoints are the best-on-validation weights of earlier runs, so their single-view validation accuracy is
slightly optimistic; the comparison between view sets is what this measures. The test split is not read.

Usage: python benchmarks/studies/tta_views.py CHECKPOINT [CHECKPOINT ...] [--out benchmarks/results/tta-views.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import RESULTS, ROOT, command, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", default=str(RESULTS / "tta-views.json"))
    args = ap.parse_args()

    import torch

    from edgecnn.data.for_model import data_for_checkpoint
    from edgecnn.measure.accuracy import classification_report
    from edgecnn.measure.predict import predict_logits
    from edgecnn.models.views import VIEW_SETS, TestTimeViews
    from edgecnn.train.checkpoint import load_checkpoint

    rows = []
    for ck in args.checkpoints:
        model, meta = load_checkpoint(Path(ck))
        data = data_for_checkpoint(Path(ck), meta, None)
        val = data.splits["val"]
        row = {"checkpoint": str(Path(ck).resolve().relative_to(ROOT)) if Path(ck).resolve().is_relative_to(ROOT)
               else ck, "arch": meta.arch, "val_images": len(val)}
        for name in VIEW_SETS:
            net = model if name == "none" else TestTimeViews(model, name)
            with torch.no_grad():
                preds = predict_logits(net, val, data.normalization).argmax(1)
            row[f"val_accuracy_{name}"] = classification_report(val.labels.numpy(), preds.numpy(),
                                                                data.classes).accuracy
        print(json.dumps(row), flush=True)
        rows.append(row)
    gains = {name: statistics.median(r[f"val_accuracy_{name}"] - r["val_accuracy_none"] for r in rows)
             for name in VIEW_SETS if name != "none"}
    result = {"benchmark": "tta_views", "command": command(), "machine": machine(), "split": "val", "rows": rows,
              "median_val_gain_points": {k: round(v * 100, 3) for k, v in gains.items()}}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["median_val_gain_points"]))


if __name__ == "__main__":
    main()
