"""Tiny real models for the runtime tests, built once per session.

- ``onnx_multi``: inputs ``feats`` float32 [batch, seq, 4] and ``ids`` int64 [batch, seq];
  outputs ``scaled = feats @ W + ids[..., None]`` [batch, seq, 3] and
  ``pooled = feats.sum(-1)`` [batch, seq]. Reference: :func:`multi_reference`.
- ``ov_ir``: the same model as OpenVINO IR (weights kept fp32, so f32 runs are exact).
- ``tflite_fp32`` / ``tflite_int8``: a small conv net converted from PyTorch with
  litert-torch, fp32 and full int8 (PT2E, per-channel symmetric), input ``img``
  [1, 3, 8, 8], output ``logits`` [1, 5]; ``tflite_reference`` holds the PyTorch outputs.
- ``tflite_elementwise``: a two-input elementwise model (``feats``, ``ids`` [2, 5]) whose
  flatbuffer is patched to a dynamic [-1, -1, ...] signature, and a copy with its
  signature removed, to drive the resize path and the tensor-name path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FEATURES = 4
CLASSES = 3
W_SEED = 7


def multi_weights() -> np.ndarray:
    return np.random.default_rng(W_SEED).standard_normal((FEATURES, CLASSES)).astype(np.float32)


def multi_reference(feats: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """NumPy reference of ``onnx_multi``, computed in float64."""
    w = multi_weights().astype(np.float64)
    f = feats.astype(np.float64)
    return {"scaled": f @ w + ids.astype(np.float64)[..., None], "pooled": f.sum(-1)}


def multi_feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "feats": rng.standard_normal((batch, seq, FEATURES)).astype(np.float32),
        "ids": rng.integers(0, 10, (batch, seq)).astype(np.int64),
    }


def build_onnx_multi(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("MatMul", ["feats", "W"], ["mm"]),
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids_f", "last"], ["ids_u"]),
        helper.make_node("Add", ["mm", "ids_u"], ["scaled"]),
        helper.make_node("ReduceSum", ["feats", "last"], ["pooled"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "multi",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", "seq", FEATURES]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", "seq", CLASSES]),
         helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", "seq"])],
        [numpy_helper.from_array(multi_weights(), "W"),
         numpy_helper.from_array(np.array([-1], np.int64), "last")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def build_onnx_linear(path: Path, *, precision_stamp: str | None = None) -> Path:
    """x [batch, 16] -> Relu(x @ W1) @ W2 -> y [batch, 8]; MatMuls that quantizers take."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "W2"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "W1"),
         numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if precision_stamp is not None:
        model.metadata_props.add(key="edgeship.precision", value=precision_stamp)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session", name="multi_feeds")
def multi_feeds_fixture():
    """``multi_feeds(batch, seq, seed=0)`` -> feeds for ``onnx_multi``."""
    return multi_feeds


@pytest.fixture(scope="session", name="multi_reference")
def multi_reference_fixture():
    """``multi_reference(feats=, ids=)`` -> float64 reference outputs of ``onnx_multi``."""
    return multi_reference


@pytest.fixture(scope="session")
def onnx_linear_stamped(model_dir) -> Path:
    return build_onnx_linear(model_dir / "linear_stamped.onnx", precision_stamp="fp16")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runtime_models")


@pytest.fixture(scope="session")
def onnx_multi(model_dir) -> Path:
    return build_onnx_multi(model_dir / "multi.onnx")


@pytest.fixture(scope="session")
def onnx_linear(model_dir) -> Path:
    return build_onnx_linear(model_dir / "linear.onnx")


@pytest.fixture(scope="session")
def ov_ir(onnx_multi, model_dir) -> Path:
    import openvino as ov

    xml = model_dir / "multi.xml"
    ov.save_model(ov.convert_model(str(onnx_multi)), str(xml), compress_to_fp16=False)
    return xml


# -- TFLite, converted from PyTorch with litert-torch ---------------------------------

def _tiny_net():
    import torch

    class TinyNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 8 * 8, 5)

        def forward(self, img):
            return {"logits": self.fc(torch.relu(self.conv(img)).flatten(1))}

    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="session")
def tflite_models(model_dir) -> dict:
    """fp32 and full-int8 .tflite of TinyNet plus PyTorch reference outputs."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    net = _tiny_net()
    gen = torch.Generator().manual_seed(1)
    sample = {"img": torch.randn(1, 3, 8, 8, generator=gen)}
    fp32 = model_dir / "tiny_fp32.tflite"
    litert_torch.convert(net, sample_kwargs=sample).export(str(fp32))

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(net, (), sample).module(), quantizer)
    calib = [torch.randn(1, 3, 8, 8, generator=gen) for _ in range(16)]
    for x in calib:
        prepared(img=x)
    quantized = convert_pt2e(prepared, fold_quantize=False)
    int8 = model_dir / "tiny_int8.tflite"
    litert_torch.convert(
        quantized, sample_kwargs=sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)
    ).export(str(int8))

    inputs = [x.numpy() for x in calib[:4]]
    with torch.no_grad():
        ref = [net(img=torch.from_numpy(x))["logits"].numpy() for x in inputs]
    return {"fp32": fp32, "int8": int8, "inputs": inputs, "reference": ref}


def _patch_tflite(src: Path, dst: Path, *, dynamic_dims: int, drop_signatures: bool) -> Path:
    """Rewrite a flatbuffer: the first ``dynamic_dims`` dims of every I/O tensor become -1
    in the shape signature; optionally drop the signature defs."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    graph = model.subgraphs[0]
    for index in list(graph.inputs) + list(graph.outputs):
        tensor = graph.tensors[index]
        sig = [int(d) for d in tensor.shape]
        tensor.shapeSignature = [-1] * dynamic_dims + sig[dynamic_dims:]
    if drop_signatures:
        model.signatureDefs = []
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


@pytest.fixture(scope="session")
def tflite_elementwise(model_dir) -> dict:
    """``scaled = feats * 2 + ids`` [batch, seq] and ``pooled = feats.sum(-1)`` [batch];
    no reshapes, so resizing batch and seq is legal for every op."""
    import litert_torch
    import torch

    class Elementwise(torch.nn.Module):
        def forward(self, feats, ids):
            return {"scaled": feats * 2.0 + ids.to(torch.float32), "pooled": feats.sum(-1)}

    static = model_dir / "elementwise_static.tflite"
    sample = {"feats": torch.zeros(2, 5), "ids": torch.zeros(2, 5, dtype=torch.int64)}
    litert_torch.convert(Elementwise().eval(), sample_kwargs=sample).export(str(static))
    return {
        "static": static,
        "dynamic": _patch_tflite(static, model_dir / "elementwise_dyn.tflite", dynamic_dims=2, drop_signatures=False),
        "nosig": _patch_tflite(static, model_dir / "elementwise_nosig.tflite", dynamic_dims=2, drop_signatures=True),
    }
