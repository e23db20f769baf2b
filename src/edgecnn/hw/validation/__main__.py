"""`python -m edgecnn.hw.validation [--out FILE] [--summary FILE]`: rerun the validation on published figures,
print the held-out errors and rewrite the summary every estimate quotes (the package's own file by default)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgecnn.hw.estimators.error_bars import SUMMARY
from edgecnn.hw.validation.summary import run_validation, write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecnn.hw.validation", description=__doc__)
    parser.add_argument("--out", type=Path, help="also write the whole validation run as JSON here")
    parser.add_argument("--summary", type=Path, default=SUMMARY, help="summary file (default: %(default)s)")
    args = parser.parse_args(argv)
    result = run_validation(progress=lambda m: print("  dpu:", m, flush=True))
    write_summary(result, "python -m edgecnn.hw.validation", args.summary)
    print("dpu held-out MAE by class:", {k: v["mae"] for k, v in result["dpu"]["summary_held_out"].items()})
    print("dataflow FPS MAE", result["dataflow"]["fps_mae_all"], "LUT MAE", result["dataflow"]["lut_mae"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
