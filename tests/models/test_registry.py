from __future__ import annotations

import pytest
import torch

from edgecnn.errors import EdgeCNNError
from edgecnn.models import create_model, list_models, profile_model

HEAVY_AT_224 = {"vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
                "convnext_tiny", "resnet50", "alexnet"}


def test_registry_holds_the_seed_models():
    expected = {"resnet18", "resnet50", "mobilenet_v2", "vgg11", "vgg13", "vgg16", "vgg19", "vgg16_bn",
                "alexnet", "squeezenet1_1", "convnext_tiny", "lenet5", "customnet"}
    assert expected <= set(list_models())
    assert list_models("vgg1?_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


@pytest.mark.parametrize("size", [64, 224])
@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_runs(name, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, input_size=size).eval()
    batch = 1 if size == 224 and name in HEAVY_AT_224 else 2
    with torch.no_grad():
        out = model(torch.randn(batch, 3, size, size))
    assert out.shape == (batch, 7)
    assert torch.isfinite(out).all()


def test_small_input_adaptation_keeps_resolution():
    small = profile_model(create_model("resnet18", input_size=64), 64)
    stock = profile_model(create_model("resnet18", input_size=64, adapt_small_input=False), 64)
    assert small.layers[0].output_shape == [64, 64, 64]  # 3x3 stride-1 stem
    assert stock.layers[0].output_shape == [64, 32, 32]
    assert small.macs > 3 * stock.macs


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(EdgeCNNError, match="did you mean: resnet18"):
        create_model("resnet19")


def test_profile_counts_macs_by_hand():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10))
    prof = profile_model(net, 16)
    assert prof.macs == 16 * 16 * 8 * 3 * 9 + 8 * 16 * 16 * 10
    assert prof.params == (8 * 27 + 8) + (2048 * 10 + 10)


def test_local_pretrained_weights_load_except_the_head(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    save_file(source.state_dict(), str(tmp_path / "r18.safetensors"))
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    for path in ("r18.safetensors", "r18.pth"):
        model = create_model("resnet18", num_classes=10, input_size=224, weights=str(tmp_path / path))
        assert torch.equal(model.conv1.weight, source.conv1.weight)
        assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
        assert model.fc.out_features == 10


def test_weights_file_with_arbitrary_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(EdgeCNNError, match="cannot read weights"):
        create_model("resnet18", weights=str(tmp_path / "evil.pth"))


def test_customnet_parameters_shape_the_network():
    net = create_model("customnet", input_size=64, channels=[16, 32], blocks=[0, 2], kernel_sizes=[5, 3],
                       head_width=32, dropout=0.2)
    prof = profile_model(net, 64)
    convs = [layer for layer in prof.layers if layer.op == "Conv2d"]
    assert len(convs) == 1 + 1 + 1 + 4  # stem, stage convs, two residual blocks of two convs
    with pytest.raises(EdgeCNNError, match="one per stage"):
        create_model("customnet", channels=[16, 32], blocks=[1, 1, 1])
    with pytest.raises(EdgeCNNError, match="below 1 pixel"):
        create_model("customnet", input_size=16, channels=[8, 8, 8, 8, 8])
