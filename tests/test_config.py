import pytest

from edgecnn.config import load_config, parse_config, quickstart_path
from edgecnn.errors import EdgeCNNError


def test_quickstart_config_is_valid():
    cfg = load_config(quickstart_path())
    assert cfg.name == "quickstart" and cfg.data.root is None


def test_unknown_key_names_key_file_and_close_match(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(EdgeCNNError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "unknown key 'train.learning_rate'" in msg


def test_unknown_top_level_key_did_you_mean():
    with pytest.raises(EdgeCNNError, match="unknown key 'modle' — did you mean: model"):
        parse_config({"modle": {"name": "resnet18"}})


def test_unknown_model_name_in_config():
    with pytest.raises(EdgeCNNError, match="unknown model 'mobilenetv2' — did you mean: mobilenet_v2"):
        parse_config({"model": {"name": "mobilenetv2"}})


def test_bad_value_and_bad_yaml(tmp_path):
    with pytest.raises(EdgeCNNError, match="train.epochs"):
        parse_config({"train": {"epochs": 0}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(EdgeCNNError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(EdgeCNNError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
