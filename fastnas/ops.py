"""Building blocks of the search space: conv-BN-ReLU6, MBConv (inverted residual), stem and head.

Every block owns its BatchNorm; convolutions have no bias (the BN after them carries it).
"""
from __future__ import annotations

import torch
from torch import nn


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand (skipped when e=1) -> kxk depthwise -> 1x1 project."""

    def __init__(self, cin: int, cout: int, kernel: int, expansion: int, stride: int):
        super().__init__()
        hidden = cin * expansion
        layers = [ConvBNAct(cin, hidden, 1)] if expansion != 1 else []
        layers += [ConvBNAct(hidden, hidden, kernel, stride, groups=hidden), ConvBNAct(hidden, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def make_choice_block(cin: int, cout: int, stride: int, kind: tuple[int, int] | None) -> nn.Module:
    """The module for one choice at one layer: MBConv(k, e), or identity for skip (kind None)."""
    return nn.Identity() if kind is None else MBConv(cin, cout, kind[0], kind[1], stride)


class Head(nn.Module):
    """1x1 conv to head channels -> global average pool -> dropout -> linear classifier."""

    def __init__(self, cin: int, head_channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.conv = ConvBNAct(cin, head_channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).mean((2, 3))
        return self.classifier(self.dropout(x))


def init_weights(module: nn.Module) -> None:
    """torchvision MobileNetV2's initialisation, plus a zero last-BN scale in residual MBConvs.

    The zero scale starts every residual block as the identity, so a randomly sampled deep path
    trains like a shallow network at first (Goyal et al. 2017's zero-init residual); a supernet
    whose paths change every step learns much sooner with it.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, MBConv) and m.residual:
            nn.init.zeros_(m.body[-1][1].weight)
