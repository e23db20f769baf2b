"""The README and docs/ stay true to the code: the generated configuration reference is current and complete, every
relative link resolves, the README stays short and shows the quickstart config as shipped."""
from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from edgecnn.config import ExperimentConfig, quickstart_path
from edgecnn.config_reference import COMMAND, render

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _nested(annotation: Any, suffix: str = "") -> list[tuple[type[BaseModel], str]]:
    """(option model, how a key path continues into it) for each model an annotation holds."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, suffix)]
    origin = get_origin(annotation)
    if origin is list:
        suffix += "[]"
    elif origin is dict:
        suffix += ".KEY"
    elif origin not in (Union, types.UnionType):
        return []
    return [found for arg in get_args(annotation) for found in _nested(arg, suffix)]


def _is_train_overrides(model: type[BaseModel]) -> bool:
    train = ExperimentConfig.model_fields["train"].annotation
    return model is not train and set(model.model_fields) == set(train.model_fields)


def field_paths(model: type[BaseModel] = ExperimentConfig, prefix: str = "",
                seen: tuple[type[BaseModel], ...] = ()) -> list[str]:
    """Every key path of an experiment (``data.augment.hflip``, ``distill.hints[].student``, ...); overrides of
    the train section and a section nested in itself are documented once, where they first appear."""
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        paths.append(path)
        for sub, suffix in _nested(info.annotation):
            if sub not in seen and not _is_train_overrides(sub):
                paths += field_paths(sub, path + suffix, (*seen, sub))
    return paths


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def test_configuration_page_is_current():
    page = ROOT / "docs" / "configuration.md"
    assert page.read_text() == render(), f"docs/configuration.md is out of date: regenerate it with `{COMMAND}`"


def test_every_configuration_key_is_documented():
    text = render()
    paths = field_paths()
    assert len(paths) > 100 and "data.augment.hflip" in paths and "distill.hints[].student" in paths
    missing = [p for p in paths if f"`{p}`" not in text and f"\n## {p}\n" not in text]  # a key or a section
    assert not missing, f"keys missing from the configuration reference: {missing}"


def test_every_documented_key_has_a_type_default_and_description():
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    empty = [row.split(" | ")[0] for row in rows if any(not cell.strip() for cell in row.strip("|").split(" | "))]
    assert rows and not empty, f"rows with an empty cell (add a Field description): {empty}"


def test_generated_page_says_how_to_regenerate():
    head = "\n".join(render().splitlines()[:5])
    assert COMMAND in head and "generated" in head


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are not links
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) < 260, f"README.md has {len(lines)} lines; move details to docs/"
    long = [i + 1 for i, line in enumerate(lines) if len(line) > 200]
    assert not long, f"README.md lines over 200 characters: {long}"


def test_readme_opens_with_the_two_commands():
    """The first block: run on the bundled sample, and the test command .ci/run reads from the README."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert block and README.read_text().index(block.group(0)) < 20
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert re.match(r"pip install -e \S* && edgecnn run\b", commands[0])
    assert commands[1].startswith('pip install -e ".[all]" && pytest')


def test_readme_yaml_is_the_quickstart_config():
    block = re.search(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    assert block, "README.md shows no yaml block"
    assert block.group(1) == quickstart_path().read_text(), \
        "README.md's YAML block differs from src/edgecnn/configs/quickstart.yaml: copy the file into it"
