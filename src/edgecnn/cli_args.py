"""Parsing of the CLI's option values (lists, ratios) into typed values or one-line errors."""
from __future__ import annotations

from typing import Optional

from edgecnn.errors import EdgeCNNError


def without_nproc(args: list[str]) -> list[str]:
    """The command line's arguments less ``--nproc K`` / ``--nproc=K`` (torchrun starts the ranks instead)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def csv_list(value: str, what: str, cast=str) -> list:
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise EdgeCNNError(f"{what}: cannot read '{value}'; give a comma-separated list such as 1,8,64") from None


def options_error(exc) -> EdgeCNNError:
    """A pydantic error of CLI-built options as one line naming the flags."""
    return EdgeCNNError("; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: "
                                  f"{e['msg'].removeprefix('Value error, ')}"
                                  if e["loc"] else e["msg"].removeprefix("Value error, ") for e in exc.errors()))


def ratios_option(text: Optional[str]):
    """--ratios auto, or layer=ratio pairs separated by commas."""
    if text is None or text == "auto":
        return text
    out = {}
    for item in csv_list(text, "--ratios"):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise EdgeCNNError(f"--ratios: '{item}' is not layer=ratio (e.g. features.0=0.3) or 'auto'") from None
        if not sep:
            raise EdgeCNNError(f"--ratios: '{item}' is not layer=ratio (e.g. features.0=0.3) or 'auto'")
    return out



def json_option(text: str, flag: str):
    """The JSON value of an option such as --student-args, or a one-line error naming the flag."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgeCNNError(f"{flag} is not valid JSON ({exc.msg}); e.g. '{{\"channels\": [16, 32]}}'") from None


def hints_option(hints: Optional[list[str]]) -> list[dict]:
    """Repeated --hint student_layer:teacher_layer[:weight] values as distill.hints entries."""
    out = []
    for h in hints or []:
        parts = h.split(":")
        if len(parts) not in (2, 3):
            raise EdgeCNNError(f"--hint '{h}': give student_layer:teacher_layer or student_layer:teacher_layer:weight")
        weight = {"weight": float(parts[2])} if len(parts) == 3 else {}
        out.append({"student": parts[0], "teacher": parts[1], **weight})
    return out
