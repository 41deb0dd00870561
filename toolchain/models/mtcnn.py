"""MTCNN face detection nets (P-, R-, O-Net) with the pretrained weights of ``facenet-pytorch``.

The three nets are defined here in plain ``torch.nn`` (layer for layer as in facenet-pytorch's
``models/mtcnn.py``) and load the state dicts shipped in its ``data/`` folder; facenet_pytorch
itself is never imported (it imports torchvision, whose wheel here is a CUDA build that breaks
torch+cpu). Inputs are RGB images normalised as MTCNN does, ``(x - 127.5) / 128``:

- ``ref:mtcnn-pnet``: fully convolutional proposal net on an image pyramid level
  (``image [batch, 3, height, width]``, height and width dynamic, each on its own) ->
  ``bbox_regression [batch, 4, h', w']``, ``face_probability [batch, 2, h', w']``;
- ``ref:mtcnn-rnet``: 24x24 candidate crops -> ``bbox_regression [batch, 4]``, ``face_probability [batch, 2]``;
- ``ref:mtcnn-onet``: 48x48 crops -> ``bbox_regression``, ``landmarks [batch, 10]``, ``face_probability``.

Calibration and validation data are crops of scikit-learn's bundled photos
(:func:`toolchain.models.realdata.photo_crops`). torch is imported inside functions only.
"""

from __future__ import annotations

import functools
from typing import Any

from toolchain.models.corpus import package_file
from toolchain.models.realdata import photo_crops

PACKAGE = "facenet-pytorch"
PNET_SIZE = (60, 80)  # one pyramid level of a 480x640 frame at scale 1/8
CALIBRATION, VALIDATION = 48, 32


def _prelu_conv(cin: int, cout: int, k: int) -> list:
    import torch.nn as nn

    return [nn.Conv2d(cin, cout, kernel_size=k), nn.PReLU(cout)]


def _nets() -> dict[str, Any]:
    import torch
    import torch.nn as nn

    class PNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = _prelu_conv(3, 10, 3)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = _prelu_conv(10, 16, 3)
            self.conv3, self.prelu3 = _prelu_conv(16, 32, 3)
            self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
            self.softmax4_1 = nn.Softmax(dim=1)
            self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))

    class RNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = _prelu_conv(3, 28, 3)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = _prelu_conv(28, 48, 3)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = _prelu_conv(48, 64, 2)
            self.dense4 = nn.Linear(576, 128)
            self.prelu4 = nn.PReLU(128)
            self.dense5_1 = nn.Linear(128, 2)
            self.softmax5_1 = nn.Softmax(dim=1)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu4(self.dense4(torch.flatten(x, 1)))
            return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = _prelu_conv(3, 32, 3)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = _prelu_conv(32, 64, 3)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = _prelu_conv(64, 64, 3)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = _prelu_conv(64, 128, 2)
            self.dense5 = nn.Linear(1152, 256)
            self.prelu5 = nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)
            self.softmax6_1 = nn.Softmax(dim=1)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(torch.flatten(x, 1)))
            return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))

    return {"pnet": PNet, "rnet": RNet, "onet": ONet}


def pretrained(net: str) -> Any:
    """The pretrained ``pnet`` | ``rnet`` | ``onet`` in eval mode. Raises CorpusMissingError."""
    import torch

    path = package_file(PACKAGE, "facenet_pytorch", f"data/{net}.pt")
    model = _nets()[net]()
    model.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
    return model.eval()


def _data(size: tuple[int, int], role: str) -> dict[str, Any]:
    n, seed = (CALIBRATION, 11) if role == "calibration" else (VALIDATION, 12)
    return {"image": photo_crops(size=size, n=n, seed=seed)}


def _factory(net: str, size: tuple[int, int], outputs: tuple[str, ...], axes: dict[int, str], task: str) -> Any:
    import torch

    from toolchain.compile.source import FactoryResult

    model = pretrained(net)
    val = _data(size, "validation")
    return FactoryResult(
        module=model, example_inputs=(torch.from_numpy(val["image"][:1].copy()),), input_names=("image",),
        output_names=outputs, dynamic_axes={"image": axes},
        calibration=functools.partial(_data, size, "calibration"), validation=functools.partial(_data, size, "validation"),
        metadata={"task": task, "source_package": PACKAGE, "dataset": "sklearn.datasets.load_sample_images crops"},
    )


def build_pnet(*, height: int = PNET_SIZE[0], width: int = PNET_SIZE[1]) -> Any:
    return _factory("pnet", (height, width), ("bbox_regression", "face_probability"),
                    {0: "batch", 2: "height", 3: "width"}, "detect")


def build_rnet() -> Any:
    return _factory("rnet", (24, 24), ("bbox_regression", "face_probability"), {0: "batch"}, "classify")


def build_onet() -> Any:
    return _factory("onet", (48, 48), ("bbox_regression", "landmarks", "face_probability"), {0: "batch"}, "classify")
