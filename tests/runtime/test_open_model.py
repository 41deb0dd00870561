"""open_model: engine choice, argument checks, and load errors that name the file."""

from __future__ import annotations

import pytest

import runtime
from runtime import Engine, ModelLoadError, UnknownEngineError


@pytest.mark.parametrize("suffix,engine", [(".onnx", Engine.ONNXRUNTIME), (".XML", Engine.OPENVINO),
                                           (".tflite", Engine.TFLITE)])
def test_engine_for_file_by_suffix(suffix, engine):
    assert runtime.engine_for_file(f"model{suffix}") is engine


def test_unknown_suffix_says_what_is_expected(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    with pytest.raises(UnknownEngineError, match=r"model\.pt.*'\.pt'.*engine="):
        runtime.open_model(path)


@pytest.mark.parametrize("engine", ["tensorrt", "ORT", ""])
def test_unknown_engine_lists_the_known_ones(onnx_linear, engine):
    with pytest.raises(UnknownEngineError) as exc:
        runtime.open_model(onnx_linear, engine=engine)
    assert all(e.value in str(exc.value) for e in Engine)


def test_engine_accepts_enum_and_any_case(onnx_linear):
    assert runtime.open_model(onnx_linear, engine=Engine.OPENVINO).engine is Engine.OPENVINO
    assert runtime.open_model(onnx_linear, engine="OpenVINO").engine is Engine.OPENVINO


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bad_threads_is_a_value_error(onnx_linear, threads):
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        runtime.open_model(onnx_linear, threads=threads)


@pytest.mark.parametrize("hint,canonical", [("f32", "f32"), ("FP32", "f32"), ("fp16", "f16"), ("bf16", "bf16")])
def test_precision_hint_aliases(onnx_linear, hint, canonical):
    assert runtime.open_model(onnx_linear, precision_hint=hint).precision_hint == canonical


@pytest.mark.parametrize("name,engine", [("m.onnx", None), ("m.onnx", "openvino"), ("m.xml", None),
                                         ("m.tflite", None)])
def test_missing_file_names_the_file(tmp_path, name, engine):
    with pytest.raises(ModelLoadError, match=rf"{name}: model file not found"):
        runtime.open_model(tmp_path / name, engine=engine)


@pytest.mark.parametrize("name,engine", [("bad.onnx", None), ("bad.onnx", "openvino"), ("bad.tflite", None)])
def test_corrupt_file_names_the_file_and_keeps_the_cause(tmp_path, name, engine):
    path = tmp_path / name
    path.write_bytes(b"\x08\x07this is not a model" * 10)
    with pytest.raises(ModelLoadError) as exc:
        runtime.open_model(path, engine=engine)
    assert str(path) in str(exc.value)
    assert exc.value.__cause__ is not None  # the engine's own error, chained


def test_available_engines_lists_everything_installed_here():
    assert set(runtime.available_engines()) == set(Engine)
    assert all(runtime.is_available(e) for e in Engine)


def test_describe_is_json_ready(onnx_multi):
    import json

    with runtime.open_model(onnx_multi, threads=2) as s:
        d = json.loads(json.dumps(s.describe()))
    assert d["engine"] == "onnxruntime" and d["threads"] == 2 and d["executed_precision"] == "fp32"
    assert d["inputs"][0] == {"name": "feats", "dtype": "float32", "shape": ["batch", "seq", 4]}
    assert [runtime.TensorSpec.from_json(x) for x in d["inputs"]][1].shape == ("batch", "seq")


@pytest.mark.parametrize("fixture", ["onnx_multi", "ov_ir"])
def test_closed_session_refuses_to_run(fixture, request, multi_feeds):
    s = runtime.open_model(request.getfixturevalue(fixture))
    s.close()
    s.close()  # idempotent
    with pytest.raises(runtime.InferenceError, match="session is closed"):
        s.run(multi_feeds(1, 2))
