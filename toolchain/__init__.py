"""edgeship toolchain (host side): compile, verify, benchmark, package, sign and push models.

Heavy libraries (torch, onnx, openvino, litert_torch) are imported inside the functions that
need them, never at module import, so the CLI starts fast and lists steps without them.
"""

__version__ = "0.1.0"
