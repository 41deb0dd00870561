"""Reference models in plain ``torch.nn`` (nothing is downloaded).

Built-in names usable as a compile source (``edgeship compile ref:digits``):

- ``ref:digits``      small CNN trained on scikit-learn's bundled 8x8 digits (real data, real accuracy)
- ``ref:mobilenetv2`` MobileNetV2-style network, 224x224, seeded init
- ``ref:resnet18``    ResNet-18-style network, 224x224, seeded init

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
}
