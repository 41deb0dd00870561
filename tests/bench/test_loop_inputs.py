"""Timing loop (warm-up excluded, both minima enforced, streams) and input pools, on real calls."""

import json
import threading

import numpy as np
import pytest

from runtime.bench import inputs, loop
from runtime.bench.errors import BatchShapeError, CellSpecError, InputDataError
from runtime.bench.spec import CellSpec, RunLength, Scenario, scenario_for
from runtime.spec import TensorSpec


class Counter:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()
        self.seen = []

    def __call__(self, feeds):
        with self.lock:
            self.n += 1
            self.seen.append(feeds)
        return sum(range(200))


def test_single_stream_meets_both_minima_and_excludes_warmup():
    c = Counter()
    rl = RunLength(warmup_min_iters=7, warmup_min_s=0.0, min_iters=50, min_duration_s=0.02, max_duration_s=5)
    m = loop.single_stream(c, [0, 1, 2], rl)
    assert m.warmup_iters >= 7
    assert len(m.samples_s) >= 50 and m.wall_s >= 0.02 and m.length_met
    assert c.n == m.warmup_iters + len(m.samples_s)  # every call is either warm-up or measured, once
    assert all(s >= 0 for s in m.samples_s)


def test_count_minimum_keeps_running_past_the_duration():
    c = Counter()
    rl = RunLength(warmup_min_iters=0, warmup_min_s=0.0, min_iters=300, min_duration_s=0.0, max_duration_s=5)
    m = loop.single_stream(c, [0], rl)
    assert len(m.samples_s) == 300


def test_max_duration_cap_is_reported():
    import time

    rl = RunLength(warmup_min_iters=0, warmup_min_s=0.0, min_iters=10**9, min_duration_s=0.0, max_duration_s=0.05)
    m = loop.single_stream(lambda f: time.sleep(0.001), [0], rl)
    assert not m.length_met and 0 < len(m.samples_s) < 10**9


def test_inputs_are_cycled_in_fixed_order():
    c = Counter()
    rl = RunLength(warmup_min_iters=0, warmup_min_s=0.0, min_iters=9, min_duration_s=0.0, max_duration_s=5)
    loop.single_stream(c, ["a", "b", "c"], rl)
    assert c.seen == ["a", "b", "c"] * 3


def test_multi_stream_counts_only_calls_inside_the_phase():
    c = Counter()
    rl = RunLength(warmup_min_iters=5, warmup_min_s=0.0, min_iters=100, min_duration_s=0.02, max_duration_s=5)
    m = loop.multi_stream(c, [0, 1], rl, streams=3)
    assert len(m.samples_s) >= 100 and m.length_met
    assert len(m.samples_s) + m.warmup_iters <= c.n


def test_multi_stream_surfaces_engine_errors():
    def boom(_):
        raise RuntimeError("engine failed")

    rl = RunLength(warmup_min_iters=1, warmup_min_s=0.0, min_iters=5, min_duration_s=0.0, max_duration_s=1)
    with pytest.raises(RuntimeError, match="engine failed"):
        loop.multi_stream(boom, [0], rl, streams=2)


def test_scenarios_are_derived_never_mixed():
    assert scenario_for(batch=1, streams=1) is Scenario.SINGLE_STREAM
    assert scenario_for(batch=4, streams=1) is Scenario.THROUGHPUT
    assert scenario_for(batch=1, streams=2) is Scenario.THROUGHPUT


def test_cell_spec_round_trip_and_validation():
    rl = RunLength(1, 0.0, 10, 0.0, 1.0)
    spec = CellSpec(cell_id="c", model_path="m.onnx", engine="onnxruntime", threads=2, batch=1, run_length=rl,
                    cpu_affinity=(0,), meta={"k": 1})
    assert CellSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(CellSpecError, match="threads"):
        CellSpec(cell_id="c", model_path="m", engine="onnxruntime", threads=0, batch=1, run_length=rl)
    with pytest.raises(CellSpecError, match="unknown keys"):
        CellSpec.from_json({**spec.to_json(), "thread": 1})
    with pytest.raises(CellSpecError):
        RunLength(1, 0.0, 10, 5.0, 1.0)


SPECS = [TensorSpec("x", "float32", ("batch", 4)), TensorSpec("ids", "int64", ("batch", 3))]


def test_random_inputs_are_seeded_and_match_the_spec():
    a = inputs.random_sample_arrays(SPECS, count=5, seed=3)
    b = inputs.random_sample_arrays(SPECS, count=5, seed=3)
    c = inputs.random_sample_arrays(SPECS, count=5, seed=4)
    assert a["x"].shape == (5, 4) and a["x"].dtype == np.float32 and a["ids"].dtype == np.int64
    assert np.array_equal(a["x"], b["x"]) and not np.array_equal(a["x"], c["x"])
    assert a["ids"].min() >= 0 and a["ids"].max() <= 1  # valid indices for any embedding table


def test_feed_pool_batches_and_fixed_shape_check():
    arr = inputs.random_sample_arrays(SPECS, count=10, seed=0)
    pool = inputs.feed_pool(arr, SPECS, batch=4, pool=16)
    assert len(pool) == 2 and pool[0]["x"].shape == (4, 4) and pool[0]["x"].flags.c_contiguous
    assert np.array_equal(pool[1]["x"], arr["x"][4:8])
    fixed = [TensorSpec("x", "float32", (1, 4))]
    with pytest.raises(BatchShapeError, match="fixed shape"):
        inputs.feed_pool({"x": arr["x"]}, fixed, batch=2, pool=4)


def test_load_validation(tmp_path):
    p = tmp_path / "v.npz"
    np.savez(p, x=np.ones((6, 1, 4), np.float64), ids=np.zeros((6, 3), np.int64), __labels__=np.arange(6))
    got = inputs.load_validation(p, SPECS)
    assert got["x"].shape == (6, 4) and got["x"].dtype == np.float32
    with pytest.raises(InputDataError, match="no array for input"):
        inputs.load_validation(p, [TensorSpec("y", "float32", ("batch", 4))])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputDataError, match="cannot read"):
        inputs.load_validation(tmp_path / "bad.npz", SPECS)
    with pytest.raises(InputDataError, match="not found"):
        inputs.load_validation(tmp_path / "none.npz", SPECS)
