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


@pytest.mark.parametrize("section, message", [
    ({"model": {"name": "customnet", "args": {"chanels": [8, 16]}}},
     r"model: model customnet takes no argument 'chanels' — did you mean: channels"),
    ({"model": {"name": "lenet5", "weights": "lenet.pth"}}, r"model: model lenet5 loads no pretrained weights"),
    ({"distill": {"student": {"name": "customnet", "args": {"blokcs": 1}}}},
     r"distill.student: model customnet takes no argument 'blokcs' — did you mean: blocks"),
    ({"models": [{"name": "resnet18", "args": {"adapt_small": True}}]},
     r"models\[0\]: model resnet18 takes no argument"),
    ({"model": {"name": "customnet", "args": {"channels": "abc"}}}, r"model customnet cannot be built"),
])
def test_model_arguments_are_checked_when_the_config_is_read(section, message):
    """Before any image is decoded: unknown arguments get the close matches, impossible values the builder's reason."""
    with pytest.raises(EdgeCNNError, match=message):
        parse_config(section, "exp.yaml")


def test_valid_model_arguments_pass():
    cfg = parse_config({"model": {"name": "customnet", "args": {"channels": [8, 16], "blocks": 1}},
                        "models": [{"name": "resnet18", "args": {"adapt_small_input": True}}]})
    assert cfg.model.args == {"channels": [8, 16], "blocks": 1}

