from __future__ import annotations

import pytest
import torch

from ferbench.errors import FerbenchError
from ferbench.models import create_model, list_models, model_card, register_model


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_at_default_size(name):
    card = model_card(name)
    model = create_model(name, num_classes=7, in_chans=card.in_chans)
    x = torch.randn(2, card.in_chans, card.input_size, card.input_size)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing[:3]}"


@pytest.mark.parametrize("name", ["cnn5", "cnn3"])
@pytest.mark.parametrize("size", [32, 48, 64])
def test_reference_cnns_work_at_any_input_size(name, size):
    model = create_model(name, num_classes=6, input_size=size).eval()
    assert model(torch.zeros(1, 1, size, size)).shape == (1, 6)


def test_reference_architectures_match_the_papers():
    cnn5 = create_model("cnn5", num_classes=6)  # 32x32: 256*7*7 -> 4096 -> 1024 -> 6
    linears = [m for m in cnn5.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (12544, 4096),
        (4096, 1024),
        (1024, 6),
    ]
    cnn3 = create_model("cnn3", num_classes=7)  # 48x48: 256*6*6 -> 4096 -> 1024 -> 256 -> 7
    linears = [m for m in cnn3.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.in_features for m in linears] == [9216, 4096, 1024, 256]


def test_builtin_zoo_and_patterns():
    assert {"cnn5", "cnn3", "resnet18", "resnet34", "resnet50"} <= set(list_models())
    assert list_models("resnet*") == ["resnet18", "resnet34", "resnet50"]


def test_any_timm_model_by_name():
    model = create_model("timm/efficientnet_b0", num_classes=7).eval()
    assert model(torch.zeros(1, 1, 48, 48)).shape == (1, 7)


def test_unknown_model_suggests_close_names():
    with pytest.raises(FerbenchError, match="did you mean resnet18"):
        create_model("resnet81")
    with pytest.raises(FerbenchError, match="unknown timm model"):
        create_model("timm/not_a_net")


def test_duplicate_registration_is_an_error():
    with pytest.raises(FerbenchError, match="already registered"):

        @register_model
        def cnn3(num_classes=7, in_chans=1, **kwargs):  # noqa: F811
            return torch.nn.Linear(1, num_classes)


def test_resnet_stem_stride_quarters_the_flops():
    """`stem_stride: 2` starts the small-stem ResNet's first stage at half the face's size;
    timm's `channels` set the width; a stride without the small stem is refused."""
    from ferbench.models.profile import count_flops

    half = {"num_classes": 7, "channels": (32, 64, 128, 256)}
    strided = create_model("resnet18", stem_stride=2, **half)
    assert strided(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
    ratio = count_flops(create_model("resnet18", **half), 1, 48) / count_flops(strided, 1, 48)
    assert 3.5 < ratio < 4.1
    with pytest.raises(FerbenchError, match="stem_stride applies to the small stem"):
        create_model("resnet18", small_stem=False, stem_stride=2)
