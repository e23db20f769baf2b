"""Records are not trusted as written: a stage record is reused or reported only while it matches its digest
(its outputs and the content of every file they name). A hand-edited number or a replaced file makes the stage
run again, its old folder moved aside; a record from before digests is adopted once."""
from __future__ import annotations

import json
import logging

from edgecnn.stages import Stage, record_digest, stage_outputs


def _finished(tmp_path, accuracy: float = 0.9) -> Stage:
    stage = Stage(tmp_path, "train", {"epochs": 1})
    stage.begin(keep_partial=False)
    (stage.dir / "best.safetensors").write_bytes(b"weights")
    stage.finish({"best_checkpoint": str(stage.dir / "best.safetensors"), "best_val_acc": accuracy})
    return stage


def _edit(stage: Stage, **outputs) -> None:
    record = json.loads(stage.record_path.read_text())
    record["outputs"].update(outputs)
    stage.record_path.write_text(json.dumps(record))


def test_a_record_that_matches_its_digest_is_reused(tmp_path):
    _finished(tmp_path)
    outputs = Stage(tmp_path, "train", {"epochs": 1}).cached()
    assert outputs is not None and outputs["best_val_acc"] == 0.9
    assert stage_outputs(tmp_path, "train")["best_val_acc"] == 0.9


def test_a_hand_edited_number_is_not_reused_nor_reported(tmp_path, caplog):
    stage = _finished(tmp_path)
    _edit(stage, best_val_acc=0.99)
    with caplog.at_level(logging.WARNING, logger="edgecnn"):
        assert Stage(tmp_path, "train", {"epochs": 1}).cached() is None
        assert stage_outputs(tmp_path, "train") is None
    assert any("does not match what it describes" in r.getMessage() for r in caplog.records)


def test_a_replaced_file_invalidates_the_record_and_the_rerun_keeps_the_old_folder(tmp_path):
    stage = _finished(tmp_path)
    (stage.dir / "best.safetensors").write_bytes(b"other weights")
    again = Stage(tmp_path, "train", {"epochs": 1})
    assert again.cached() is None
    again.begin(keep_partial=False)  # what a rerun does next: the old folder is moved aside, never deleted
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("train.prev-")]
    assert len(kept) == 1 and (kept[0] / "best.safetensors").read_bytes() == b"other weights"


def test_a_record_from_before_digests_is_adopted_once(tmp_path):
    stage = _finished(tmp_path)
    record = json.loads(stage.record_path.read_text())
    del record["digest"]
    stage.record_path.write_text(json.dumps(record))
    assert Stage(tmp_path, "train", {"epochs": 1}).cached() is not None
    adopted = json.loads(stage.record_path.read_text())
    assert adopted["digest"] == record_digest(adopted, tmp_path)
    _edit(stage, best_val_acc=0.5)  # from now on it is checked like any other
    assert Stage(tmp_path, "train", {"epochs": 1}).cached() is None


def test_an_edited_variant_accuracy_is_measured_again_by_the_run(tmp_path):
    from edgecnn.config import parse_config
    from edgecnn.pipeline import run

    cfg = parse_config({"name": "edited", "output": str(tmp_path), "targets": [], "precisions": ["fp32"],
                        "data": {"limit_per_class": 4, "image_size": 16, "split": {"val": 0.25, "test": 0.25}},
                        "model": {"name": "customnet", "args": {"stem_channels": 4, "channels": [8], "blocks": 0}},
                        "train": {"epochs": 1, "batch_size": 8},
                        "evaluate": {"latency_batches": [1], "latency_repeats": 3}})
    first = run(cfg, show_progress=False)
    measured = first.results[0]["accuracy"]
    record_path = next((first.run_dir / "variants").glob("*/stage.json"))
    record = json.loads(record_path.read_text())
    record["outputs"]["metrics"]["accuracy"] = 1.0 if measured < 1 else 0.0
    record_path.write_text(json.dumps(record))
    again = run(cfg, show_progress=False)
    assert again.results[0]["accuracy"] == measured
    assert "train" in again.skipped_stages  # only the edited record's stage ran again
