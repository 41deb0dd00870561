"""MobileNetV2-style classifier in plain torch.nn (seeded init; for size and latency figures).

``build(image_size=224, width_mult=1.0, num_classes=1000, seed=0)``: inverted residual blocks
with the MobileNetV2 settings table (~3.5 M parameters at the defaults); tests use a small
``image_size``/``width_mult``.
"""

from __future__ import annotations

from typing import Any

# t (expansion), c (channels), n (repeats), s (stride) -- the MobileNetV2 paper's table
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _div8(v: float) -> int:
    return max(8, int(v + 4) // 8 * 8)


def _make_model(*, width_mult: float, num_classes: int) -> Any:
    import torch.nn as nn

    def conv_bn(cin: int, cout: int, k: int, s: int, groups: int = 1, act: bool = True) -> nn.Sequential:
        mods = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            mods.append(nn.ReLU6())
        return nn.Sequential(*mods)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers = [] if expand == 1 else [conv_bn(cin, hidden, 1, 1)]
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, 1, act=False)]
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return x + y if self.residual else y

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            cin = _div8(32 * width_mult)
            feats = [conv_bn(3, cin, 3, 2)]
            for t, c, n, s in _SETTINGS:
                cout = _div8(c * width_mult)
                for i in range(n):
                    feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                    cin = cout
            last = _div8(1280 * max(1.0, width_mult))
            feats.append(conv_bn(cin, last, 1, 1))
            self.features = nn.Sequential(*feats)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

        def forward(self, x):
            return self.classifier(self.pool(self.features(x)).flatten(1))

    return MobileNetV2()


def build(*, image_size: int = 224, width_mult: float = 1.0, num_classes: int = 1000, seed: int = 0) -> Any:
    """The seeded model in eval mode plus one example input ``(1, 3, image_size, image_size)``."""
    from toolchain.models._init import seeded_image_classifier

    return seeded_image_classifier(
        lambda: _make_model(width_mult=width_mult, num_classes=num_classes),
        image_size=image_size, num_classes=num_classes, seed=seed,
    )
