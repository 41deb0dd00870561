"""runtime.Session overhead against raw OpenVINO calls, measured side by side in one run.

Prints the median latency (microseconds, 1 thread) of: OpenVINO ``infer(dict)`` (copies
inputs), OpenVINO with shared-memory input tensors (what benchmark_app does), and
edgeship's ``Session.run``. Usage: python benchmarks/runtime_overhead.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import runtime  # noqa: E402

rng = np.random.default_rng(0)


def _save(nodes, x_shape, y_shape, inits, path):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, x_shape)],
                     [h.make_tensor_value_info("y", T.FLOAT, y_shape)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def conv_model(path):
    w = nh.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "W")
    _save([h.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
           h.make_node("GlobalAveragePool", ["r"], ["y"])], [1, 3, 224, 224], [1, 16, 1, 1], [w], path)


def mm_model(path):
    w = nh.from_array(rng.standard_normal((64, 64)).astype(np.float32), "W")
    _save([h.make_node("MatMul", ["x", "W"], ["y"])], [1, 64], [1, 64], [w], path)


def median_us(fn, n):
    for _ in range(20):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e6


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="edgeship-rt-"))
    print("median latency, microseconds, 1 thread, OpenVINO", ov.get_version())
    for name, build, shape, n in [("matmul 1x64", mm_model, (1, 64), 3000),
                                  ("conv 1x3x224x224", conv_model, (1, 3, 224, 224), 300)]:
        path = str(tmp / f"{name.split()[0]}.onnx")
        build(path)
        x = rng.standard_normal(shape).astype(np.float32)
        cm = ov.Core().compile_model(path, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": "1"})
        req = cm.create_infer_request()
        sess = runtime.open_model(path, engine="openvino", threads=1)

        def shared():
            req.set_tensor("x", ov.Tensor(x, shared_memory=True))
            req.infer()
            return req.get_output_tensor(0).data.copy()

        t_dict = median_us(lambda: req.infer({"x": x}), n)
        t_shared = median_us(shared, n)
        t_sess = median_us(lambda: sess.run({"x": x}), n)
        print(f"{name:20s} infer(dict) {t_dict:8.1f} | shared tensor {t_shared:8.1f} | "
              f"Session.run {t_sess:8.1f} | Session/shared {t_sess / t_shared:5.2f}x")


if __name__ == "__main__":
    main()
