"""The sample layout (batch axes, stored arrays, chunked runs) and the probe sizes: pure numpy."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.spec import TensorSpec
from toolchain.compile.dynamic import probe_candidates, second_size
from toolchain.compile.samples import Layout, resize_axis, run_samples

VAD = (TensorSpec("input", "float32", (None, None)), TensorSpec("state", "float32", (2, None, 128)),
       TensorSpec("sr", "int64", ()))


def test_layout_round_trips_batch_axes_not_at_0_and_scalars() -> None:
    layout = Layout.of(VAD, {"state": 1})
    assert layout.batch_axes == {"input": 0, "state": 1, "sr": None}
    assert layout.stored_shape(VAD[1]) == (2, 128) and layout.stored_shape(VAD[2]) == ()
    rng = np.random.default_rng(0)
    stored = {"input": rng.standard_normal((3, 512)).astype(np.float32),
              "state": rng.standard_normal((3, 2, 128)).astype(np.float32), "sr": np.full(3, 16000)}
    feeds = layout.split(stored)
    assert feeds[1]["state"].shape == (2, 1, 128) and feeds[1]["sr"].shape == () and feeds[1]["input"].shape == (1, 512)
    assert np.array_equal(feeds[1]["state"][:, 0], stored["state"][1])
    back = layout.to_stored(feeds)
    assert all(np.array_equal(back[k], stored[k]) for k in stored)
    assert not layout.batchable(VAD, (TensorSpec("output", "float32", (None, 1)),))  # sr has no batch axis


def test_run_samples_chunks_when_batchable_and_stacks_otherwise() -> None:
    specs = (TensorSpec("x", "float32", ("batch", 3)),)
    layout = Layout.of(specs)
    stored = {"x": np.arange(12, dtype=np.float32).reshape(4, 3)}
    calls = []

    def run(feeds):
        calls.append(feeds["x"].shape)
        return {"y": feeds["x"] * 2, "s": np.float32(feeds["x"].sum())}

    stats: dict = {}
    out = run_samples(run, stored, layout=layout, names=["y"], batched=True, stats=stats)
    assert calls == [(4, 3)] and stats["batch"] == 4 and np.array_equal(out["y"], stored["x"] * 2)
    calls.clear()
    out = run_samples(run, stored, layout=layout, names=["s"], batched=True, stats=stats)
    # a scalar output cannot be split by rows: every sample runs alone, outputs are stacked
    assert calls == [(4, 3), (1, 3), (1, 3), (1, 3), (1, 3)] and out["s"].shape == (4,) and stats["batch"] == 1


def test_probe_sizes_keep_divisibility_and_tie_named_dims() -> None:
    assert [second_size(n, up=True) for n in (1, 7, 16, 48, 640)] == [2, 8, 32, 64, 768]
    assert [second_size(n, up=False) for n in (7, 16, 48, 640)] == [6, 8, 40, 576]
    seq = (TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("mask", "int64", ("batch", "seq")))
    stored = {"ids": np.arange(10).reshape(2, 5), "mask": np.ones((2, 5), np.int64)}
    up, down = probe_candidates(stored, seq, Layout.of(seq))
    assert up.sizes == {"batch": 8, "seq": 6} and up.base == {"batch": 1, "seq": 5} and down.sizes["seq"] == 4
    assert up.arrays["ids"].shape == (8, 6) and up.arrays["mask"].shape == (8, 6)
    assert np.array_equal(up.arrays["ids"][0], [0, 1, 2, 3, 4, 0])  # wrapped: real ids stay in the vocabulary
    cls = (TensorSpec("x", "float32", (None, 3, None, None)),)
    p = probe_candidates({"x": np.zeros((1, 3, 48, 192), np.float32)}, cls, Layout.of(cls))[0]
    assert p.sizes == {"x:0": 8, "x:2": 64, "x:3": 256}  # '?' H and W: two dims, not one
    assert probe_candidates({"x": np.zeros((2, 3))}, (TensorSpec("x", "float32", (1, 3)),),
                            Layout.of((TensorSpec("x", "float32", (1, 3)),))) == []


def test_resize_axis_wraps_and_cuts() -> None:
    a = np.arange(6).reshape(2, 3)
    assert resize_axis(a, 1, 5).tolist() == [[0, 1, 2, 0, 1], [3, 4, 5, 3, 4]]
    assert resize_axis(a, 1, 2).tolist() == [[0, 1], [3, 4]]
    with pytest.raises(ValueError):
        Layout.of(VAD).feeds({"input": np.zeros((2, 4)), "state": np.zeros((2, 2, 1, 128)), "sr": np.zeros(2)}, 0, 2)
