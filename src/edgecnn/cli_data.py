"""`edgecnn data DIR`: what an image folder holds and what a run will do about it, before any training
(edgecnn.data.check does the work; this module reads the options and prints)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgecnn.cli_boundary import fail
from edgecnn.data.check import NEAR_BITS, DatasetCheck, mode_bits
from edgecnn.errors import EdgeCNNError

console = Console()
MAX_CLASS_ROWS = 30  # more classes: the smallest ones are listed


def data_command(folder: Path = typer.Argument(..., help="An ImageFolder: one sub-folder of images per class."),
                 image_size: Optional[int] = typer.Option(None, "--image-size", help="Side in pixels the images "
                                                          "are resized to (default: the config's, else 64)."),
                 config: Optional[Path] = typer.Option(None, "--config", help="Experiment YAML whose data section "
                                                       "and seed to use (default: the bundled quickstart's)."),
                 json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the check as JSON."),
                 near_threshold: int = typer.Option(NEAR_BITS, "--near-threshold", help="Near duplicates: 64-bit "
                                                    "pHashes at most this many bits apart (then confirmed by a "
                                                    "256-bit pHash).")) -> None:
    """Check an image folder before training: class counts, image sizes and modes, skipped files and duplicates
    across the train/val/test split a run would make (they inflate every accuracy)."""
    from edgecnn.config import load_config
    from edgecnn.data.check import check_dataset

    try:
        if not folder.is_dir():
            raise EdgeCNNError(f"data folder not found: {folder}; pass the path of an ImageFolder (one sub-folder of "
                               "images per class)")
        overrides: dict[str, Any] = {"data.root": str(folder)}
        if image_size is not None:
            overrides["data.image_size"] = image_size
        cfg = load_config(config, overrides)
        settings = {"data.resize": getattr(cfg.data, "resize", "stretch"),
                    "data.channels": getattr(cfg.data, "channels", "auto"),
                    "train.class_balance": getattr(cfg.train, "class_balance", "none"),
                    "train.select_by": getattr(cfg.train, "select_by", "accuracy")}
        check = check_dataset(cfg.data, cfg.seed, near_threshold=near_threshold, settings=settings)
    except EdgeCNNError as exc:
        fail(exc)
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(check.to_dict(), indent=1) + "\n")
        except OSError as exc:
            fail(EdgeCNNError(f"cannot write --json {json_path} ({exc.strerror or type(exc).__name__}); give a path "
                              "in an existing, writable folder"))
    print_check(check)
    if json_path is not None:
        console.print(f"JSON: [bold]{escape(str(json_path))}[/]")


def print_check(check: DatasetCheck) -> None:
    """The check as tables (counts, sizes and modes, duplicates), then the actions and the time of each part."""
    total = sum(sum(c.values()) for c in check.counts.values())
    console.print(f"[bold]{escape(check.root)}[/]: {len(check.classes)} classes, {total} images used, decoded at "
                  f"{check.image_size}x{check.image_size} with {check.channels} channel(s)", highlight=False)
    console.print(_counts_table(check))
    _print_files(check)
    _print_duplicates(check)
    console.print("[bold]what the run does[/]")
    for action in check.actions:
        loud = " copy in " in action and "inflated" in action
        console.print(f"  - [bold red]{escape(action)}[/]" if loud else f"  - {escape(action)}", highlight=False)
    console.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in check.seconds.items()), style="dim")


def _counts_table(check: DatasetCheck) -> Table:
    splits = list(check.counts)
    table = Table("class", *splits, "total", title="images per class and split")
    classes = check.classes
    if len(classes) > MAX_CLASS_ROWS:  # the smallest classes are the ones to look at
        classes = sorted(classes, key=lambda c: check.counts["train"][c])[:MAX_CLASS_ROWS]
        table.caption = f"the {MAX_CLASS_ROWS} smallest of {len(check.classes)} classes"
    for cls in classes:
        row = [check.counts[s][cls] for s in splits]
        style = "yellow" if cls == check.smallest_class and check.imbalance >= 2 else None
        table.add_row(escape(cls), *map(str, row), str(sum(row)), style=style)
    sums = [sum(check.counts[s].values()) for s in splits]
    table.add_section()
    table.add_row("[bold]all[/]", *map(str, sums), str(sum(sums)))
    return table


def _print_files(check: DatasetCheck) -> None:
    """Original sizes and modes side by side, then the size range."""
    s = check.sizes
    sizes = Table("original size", "images", title="image sizes (file headers)")
    for width, height, count in s.common:
        sizes.add_row(f"{width}x{height}", str(count))
    if s.distinct > len(s.common):
        sizes.add_row(f"{s.distinct - len(s.common)} other sizes", "")
    modes = Table("mode", "bits", "images", title="image modes")
    for mode, count in s.modes.items():
        modes.add_row(mode, str(mode_bits(mode)), str(count))
    console.print(Columns([sizes, modes]))
    notes = [f"width {s.min_width}-{s.max_width}, height {s.min_height}-{s.max_height}",
             f"{s.not_square} not square (width/height {s.min_aspect:g}-{s.max_aspect:g})"]
    if s.unreadable:
        notes.append(f"{s.unreadable} unreadable headers")
    console.print("; ".join(notes), highlight=False)


def _print_duplicates(check: DatasetCheck) -> None:
    d = check.duplicates
    table = Table("splits", "identical pairs", "near pairs", "images with a copy",
                  title=f"duplicates (near: pHash within {d.near_threshold}/64 bits, confirmed within "
                        f"{d.confirm_threshold}/256)")
    for o in d.across:
        style = "bold red" if o.images else None
        table.add_row(f"{o.second} in {o.first}", str(o.identical_pairs), str(o.near_pairs),
                      f"{o.images} of {sum(check.counts[o.second].values())} {o.second}", style=style)
    for name, w in d.within.items():
        if w["identical_pairs"] or w["near_pairs"]:
            table.add_row(f"within {name}", str(w["identical_pairs"]), str(w["near_pairs"]), "")
    console.print(table)
    console.print(f"{d.candidates} pair(s) within the 64-bit threshold, {d.rejected} rejected as look-alikes by the "
                  f"256-bit hash; {d.low_contrast} near-uniform images (coarse contrast < {d.min_contrast:g}) not "
                  "compared for near copies", highlight=False)
    for o in d.across:
        for ex in o.examples:
            how = "identical" if ex["identical"] else f"{ex['distance']} bits apart"
            console.print(f"  [red]{o.second}[/] {escape(ex['second'])}  ~  {o.first} {escape(ex['first'])} ({how})",
                          highlight=False)
