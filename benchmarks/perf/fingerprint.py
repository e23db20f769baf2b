"""What the data's content fingerprint costs: every run reads its images' identity from their bytes
(edgecnn.data.fingerprint), so a file replaced under the same name is new data.

Usage: python benchmarks/perf/fingerprint.py [--data ../shared/data/eurosat] [--rounds 3] [--quickstart]
       [--out benchmarks/results/fingerprint.json]
Protocol (fixed before the run): on the EuroSAT development set and on the bundled sample, the median of --rounds
timings of (a) a first fingerprint with no remembered digests (every file read; the files themselves are in the
page cache after the first round, as on any rerun) and (b) a rerun with the digests remembered (only stat
calls); the datasets are only read, never touched. Per-file costs are extrapolated linearly to 1,000,000 files
(stated as an extrapolation, not a measurement). With --quickstart, one `edgecnn run` of the bundled quickstart
is timed on a fresh cache so the fingerprint's share of a quickstart run can be stated.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common.py
from _common import DEFAULT_DATA, RESULTS, command, machine  # noqa: E402

MILLION = 1_000_000


def _files(root: Path) -> list[str]:
    from edgecnn.data.datasets import scan_image_folder

    return scan_image_folder(root).files


def measure(root: Path, rounds: int) -> dict:
    from edgecnn.data.fingerprint import fingerprint_files

    files = _files(root)
    first, again = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            a = fingerprint_files(root, files, Path(cache))
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = fingerprint_files(root, files, Path(cache))
            again.append(time.perf_counter() - t)
            assert a.digest == b.digest and a.read == len(files) and b.read == 0
    n = len(files)
    bytes_total = sum((root / f).stat().st_size for f in files)
    first_s, again_s = statistics.median(first), statistics.median(again)
    return {"root": str(root), "files": n, "bytes": bytes_total, "first_s": round(first_s, 3),
            "remembered_s": round(again_s, 3),
            "rounds": rounds, "extrapolated_1m_files_first_s": round(first_s / n * MILLION, 1),
            "extrapolated_1m_files_remembered_s": round(again_s / n * MILLION, 1)}


def quickstart_run(work: Path) -> dict:
    start = time.perf_counter()
    env_cache = work / "cache"
    done = subprocess.run([sys.executable, "-m", "edgecnn", "--quiet", "run", "--name", "fp-quickstart"],
                          cwd=work, capture_output=True, text=True, env={**__import__("os").environ,
                                                                         "EDGECNN_CACHE": str(env_cache)})
    return {"exit_code": done.returncode, "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quickstart", action="store_true", help="Also time one quickstart run.")
    parser.add_argument("--out", default=str(RESULTS / "fingerprint.json"))
    args = parser.parse_args()
    from edgecnn.data.datasets import SAMPLE_ROOT

    result = {"benchmark": "fingerprint", "command": command(), "machine": machine(),
              "eurosat": measure(Path(args.data), args.rounds), "sample": measure(SAMPLE_ROOT, args.rounds)}
    if args.quickstart:
        with tempfile.TemporaryDirectory() as work:
            run = quickstart_run(Path(work))
        result["quickstart_run"] = run
        if run["exit_code"] == 0:
            result["share_of_quickstart"] = {
                "sample_first": round(result["sample"]["first_s"] / run["wall_s"], 5),
                "eurosat_first": round(result["eurosat"]["first_s"] / run["wall_s"], 5),
                "eurosat_remembered": round(result["eurosat"]["remembered_s"] / run["wall_s"], 5)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
