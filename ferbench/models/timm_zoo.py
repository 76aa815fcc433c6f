"""timm architectures behind the ferbench interface.

``resnet18/34/50`` are registered with a small-image stem (3×3 stride-1 conv, no max-pool), the
usual adaptation for 48×48 faces that the ~72% FER2013 ResNet18 results use; ``timm/<name>``
builds any timm architecture unchanged.
"""

from __future__ import annotations

import torch.nn as nn

from ferbench.errors import FerbenchError
from ferbench.models.registry import ModelCard, register_model


def create_timm(
    arch: str, num_classes: int = 7, in_chans: int = 1, input_size: int | None = None, **kwargs
) -> nn.Module:
    import timm

    if arch not in timm.list_models():
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join('timm/' + c for c in close)}?" if close else ""
        raise FerbenchError(f"unknown timm model 'timm/{arch}'{hint}")
    kwargs.pop("pretrained", None)  # no network at run time: always from scratch
    return timm.create_model(
        arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
    )


def timm_card(name: str) -> ModelCard:
    return ModelCard(
        name=name,
        summary=f"timm {name[5:]} (unchanged architecture)",
        family="timm",
        input_size=48,
        source="timm",
    )


def _small_stem_resnet(
    arch: str, num_classes: int, in_chans: int, small_stem: bool, stem_stride: int = 1, **kwargs
) -> nn.Module:
    """timm's ResNet with one 3x3 stem convolution and no max-pool.  `stem_stride` 2 starts
    the first stage at half the face's size: a quarter of the FLOPs (at half width,
    `channels: [32, 64, 128, 256]`, 1.2x vggfer_s's training speed at 48x48 on a CPU, against
    0.31x with stride 1).  timm's own arguments (`channels`, ...) pass through."""
    kwargs.pop("input_size", None)
    model = create_timm(arch, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if small_stem:
        out = model.conv1.out_channels
        model.conv1 = nn.Conv2d(in_chans, out, 3, stride=stem_stride, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif stem_stride != 1:
        raise FerbenchError(f"{arch}: stem_stride applies to the small stem (small_stem: true)")
    return model


@register_model(family="resnet", summary="timm ResNet-18, 3x3 stride-1 stem for small faces")
def resnet18(num_classes: int = 7, in_chans: int = 1, small_stem: bool = True, **kwargs):
    return _small_stem_resnet("resnet18", num_classes, in_chans, small_stem, **kwargs)


@register_model(family="resnet", summary="timm ResNet-34, 3x3 stride-1 stem for small faces")
def resnet34(num_classes: int = 7, in_chans: int = 1, small_stem: bool = True, **kwargs):
    return _small_stem_resnet("resnet34", num_classes, in_chans, small_stem, **kwargs)


@register_model(family="resnet", summary="timm ResNet-50, 3x3 stride-1 stem for small faces")
def resnet50(num_classes: int = 7, in_chans: int = 1, small_stem: bool = True, **kwargs):
    return _small_stem_resnet("resnet50", num_classes, in_chans, small_stem, **kwargs)
