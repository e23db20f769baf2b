"""Wall time of the README's first command, `edgecnn run` on the bundled sample, from nothing (a fresh output folder,
a cold image cache), with the time of each stage read from the run's log, and the same command again (every stage
reused).

Usage: python benchmarks/claims/quickstart.py [--out benchmarks/results/quickstart.json]
Run it on an idle machine: it is a timing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import RESULTS, command, machine  # noqa: E402

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO (\S+): (.*)$")


def timed_run(workdir: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgecnn.cli", "--quiet", "run"], cwd=workdir, env=env,
                          capture_output=True, text=True)
    return time.perf_counter() - start, done


def log_events(run_log: Path) -> list[tuple[float, str]]:
    """(seconds since the first line, message) for each line of run.log."""
    events, first = [], None
    for line in run_log.read_text().splitlines():
        if m := STAMP.match(line):
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            first = first if first is not None else t
            events.append((round(t - first, 2), f"{m.group(2)}: {m.group(3)}"[:160]))
    return events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS / "quickstart.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "EDGECNN_CACHE": str(work / "cache")}  # a cold decode cache, like a new user's
        first_s, first = timed_run(work, env)
        if first.returncode != 0:
            sys.exit(f"edgecnn run failed:\n{first.stderr[-2000:]}")
        again_s, again = timed_run(work, env)
        events = log_events(work / "runs" / "quickstart" / "run.log")
        results = json.loads((work / "runs" / "quickstart" / "results.json").read_text())["rows"]
    out = {"benchmark": "quickstart", "command": command(), "machine": machine(), "timed_command": "edgecnn run",
           "first_run_seconds": round(first_s, 1), "rerun_seconds": round(again_s, 1), "target_seconds": 300,
           "variants": {r["variant"]: round(r["accuracy"], 4) for r in results}, "log": events,
           "stdout_tail": first.stdout[-1500:]}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("first_run_seconds", "rerun_seconds", "variants")}), flush=True)


if __name__ == "__main__":
    main()
