"""Names from a configuration or the command line that become file or folder names (run names, model labels,
low-bit variant and spec names, study names): validated here, once, so that none can point outside the run
directory or break the file system's limits.

A name is one plain path component: not empty, at most ``MAX_NAME_LENGTH`` characters, no path separator, no
control character, not ``.`` or ``..`` and not hidden (a leading dot). ``PlainName`` is the pydantic type every
option model uses for such a field; ``check_name`` is the same rule for code that takes a name directly.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from edgecnn.errors import EdgeCNNError

#: File systems allow 255 bytes per name; edgecnn adds prefixes and suffixes (``.prev-<hash>``, ``.tmp``).
MAX_NAME_LENGTH = 100
_RULE = f"use letters, digits, '-', '_' and '.', at most {MAX_NAME_LENGTH} characters"


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a file or folder name inside a run directory, else None."""
    if not value:
        return "it is empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"it has {len(value)} characters"
    if "/" in value or "\\" in value:
        return "it contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "it contains a control character"
    if value in (".", ".."):
        return "it names a directory"
    if value.startswith("."):
        return "it starts with '.' (a hidden file)"
    return None


def check_name(value: str, what: str = "name") -> str:
    """``value`` when it is a plain name, else a one-line EdgeCNNError naming ``what`` and the rule."""
    problem = name_problem(value)
    if problem is not None:
        raise EdgeCNNError(f"{what} {_shown(value)} cannot be a file or folder name: {problem}; {_RULE}")
    return value


def check_output_file(path: Path, what: str) -> Path:
    """``path`` when a file can be written there (before hours of work that end by writing it): not a folder, and
    its folder exists writable or can be made in a writable place; else a one-line EdgeCNNError."""
    path = Path(path)
    if path.is_dir():
        raise EdgeCNNError(f"{what} {path} is a folder; give a file name, e.g. {path / 'best.yaml'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise EdgeCNNError(f"{what} {path}: {parent} is not a writable folder; choose a place you can write to")
    return path


def _shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...' ({len(value)} characters)"


def _validate(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"{_shown(value)} cannot be a file or folder name: {problem}; {_RULE}")
    return value


#: A str field whose value becomes a file or folder name.
PlainName = Annotated[str, AfterValidator(_validate)]
