"""Size on disk of saved artefacts."""
from __future__ import annotations

from pathlib import Path


def file_size(path: str | Path) -> int:
    """Bytes of a file, or of all files under a folder (e.g. an ONNX model with external data)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"
