"""`edgeship compile`: one PyTorch model in, verified artifacts for every engine out.

Modules: ``source`` (factory/.pt2/.onnx loading, the factory contract), ``export`` (reference
ONNX), ``registry`` (engine -> converter), ``ort`` / ``openvino`` / ``tflite`` (converters),
``verify`` (figures and tolerances), ``artifacts`` (convert + verify one artifact),
``manifest`` (schema and crash-safe build dir), ``pipeline`` (the whole build), ``cli``.
Nothing heavy is imported here; ``FactoryResult`` is re-exported for model factories.
"""

from toolchain.compile.source import FactoryResult

__all__ = ["FactoryResult"]
