"""User-facing errors: one line that names the problem and the fix."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeCNNError(Exception):
    """An error caused by user input (config, data, names, files), shown without a traceback."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' — did you mean: a, b?' for the close matches of ``name`` among ``choices`` (or '')."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" — did you mean: {', '.join(matches)}?" if matches else ""
