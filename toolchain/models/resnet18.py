"""ResNet-18-style classifier in plain torch.nn (seeded init; for size and latency figures).

``build(image_size=224, width=64, num_classes=1000, seed=0)``: at the defaults this has the
ResNet-18 layout (BasicBlock x [2, 2, 2, 2], ~11.7 M parameters); tests use a small
``image_size``/``width`` to stay fast.
"""

from __future__ import annotations

from typing import Any


def _make_model(*, width: int, num_classes: int) -> Any:
    import torch.nn as nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=False)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + idt)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.stem = nn.Sequential(
                nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            chans = [w, 2 * w, 4 * w, 8 * w]
            layers, cin = [], w
            for i, c in enumerate(chans):
                stride = 1 if i == 0 else 2
                layers += [BasicBlock(cin, c, stride), BasicBlock(c, c, 1)]
                cin = c
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            y = self.pool(self.layers(self.stem(x)))
            return self.fc(y.flatten(1))

    return ResNet18()


def build(*, image_size: int = 224, width: int = 64, num_classes: int = 1000, seed: int = 0) -> Any:
    """The seeded model in eval mode plus one example input ``(1, 3, image_size, image_size)``."""
    from toolchain.models._init import seeded_image_classifier

    return seeded_image_classifier(
        lambda: _make_model(width=width, num_classes=num_classes),
        image_size=image_size, num_classes=num_classes, seed=seed,
    )
