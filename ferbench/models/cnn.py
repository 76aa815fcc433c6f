"""The reference CNNs from the FER literature ferbench reproduces, and a compact fast one.

Flatten sizes are computed by a dry forward pass at the requested input size, so both models
work at 32×32, 48×48 and larger.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ferbench.models.registry import register_model


def _flat_features(features: nn.Module, in_chans: int, input_size: int) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, in_chans, input_size, input_size)).numel()


class ConvThenDense(nn.Module):
    """A convolutional feature extractor followed by a fully connected classifier."""

    def __init__(
        self,
        features: nn.Module,
        widths: list[int],
        num_classes: int,
        in_chans: int,
        input_size: int,
        dropout: tuple[float, ...],
    ):
        super().__init__()
        self.features = features
        layers: list[nn.Module] = [nn.Flatten()]
        width = _flat_features(features, in_chans, input_size)
        for i, out in enumerate(widths):
            layers += [nn.Linear(width, out), nn.ReLU(inplace=True)]
            if i < len(dropout) and dropout[i] > 0:
                layers.append(nn.Dropout(dropout[i]))
            width = out
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model(
    input_size=32,
    mean=(0.1307,),
    std=(0.3081,),
    family="cnn",
    summary="2 conv + 3 FC reference CNN (52.8% on 6-class FER2013 at 32x32)",
)
def cnn5(
    num_classes: int = 7, in_chans: int = 1, input_size: int = 32, dropout: float = 0.0, **_: object
) -> nn.Module:
    """Five-layer CNN: conv64-pool, conv256(no pad)-pool, FC 4096, FC 1024, FC classes."""
    features = nn.Sequential(
        nn.Conv2d(in_chans, 64, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 256, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
    return ConvThenDense(
        features, [4096, 1024], num_classes, in_chans, input_size, dropout=(dropout, dropout)
    )


@register_model(
    input_size=48, family="cnn", summary="3 conv + 4 FC reference CNN (60.5% on FER2013 at 48x48)"
)
def cnn3(
    num_classes: int = 7, in_chans: int = 1, input_size: int = 48, dropout: float = 0.5, **_: object
) -> nn.Module:
    """Three conv blocks (64, 128, 256) then FC 4096, 1024, 256, classes with dropout."""
    blocks: list[nn.Module] = []
    width = in_chans
    for out in (64, 128, 256):
        blocks += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        width = out
    return ConvThenDense(
        nn.Sequential(*blocks),
        [4096, 1024, 256],
        num_classes,
        in_chans,
        input_size,
        dropout=(dropout, dropout, 0.0),
    )


@register_model(
    input_size=48,
    family="vgg",
    summary="VGG variant with batch norm (Khaireddin & Chen 2021: 73.28% on FER2013)",
)
def vggfer(
    num_classes: int = 7, in_chans: int = 1, input_size: int = 48, dropout: float = 0.2, **_: object
) -> nn.Module:
    """Four stages of two 3x3 conv + BN + ReLU (64, 128, 256, 512) and max-pool; FC 4096, 4096."""
    layers: list[nn.Module] = []
    width = in_chans
    for out in (64, 128, 256, 512):
        for _ in range(2):
            layers += [
                nn.Conv2d(width, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            width = out
        layers.append(nn.MaxPool2d(2))
    return ConvThenDense(
        nn.Sequential(*layers),
        [4096, 4096],
        num_classes,
        in_chans,
        input_size,
        dropout=(dropout, dropout),
    )


@register_model(
    input_size=48,
    family="vgg",
    summary="Compact VGG (8 conv + BN, global-pool head) built for fast training on a CPU",
)
def vggfer_s(
    num_classes: int = 7,
    in_chans: int = 1,
    input_size: int = 48,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    dropout: float = 0.3,
    **_: object,
) -> nn.Module:
    """vggfer's four stages of two 3x3 conv + BN + ReLU at a quarter of the width, then global
    average pooling and one linear layer instead of the 4096-wide FC head: 1.2 M parameters and
    235 MFLOPs at 48x48 against vggfer's 40 M / 1 GFLOP, so an epoch of FER2013 fits in about a
    minute on two CPU cores."""
    layers: list[nn.Module] = []
    width = in_chans
    for out in widths:
        for _ in range(2):
            layers += [
                nn.Conv2d(width, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            width = out
        layers.append(nn.MaxPool2d(2))
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(width, num_classes),
    ]
    return nn.Sequential(*layers)
