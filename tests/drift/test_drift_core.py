"""runtime.drift: the baseline built from validation data, the live sketch, PSI and the alarm
rule (pure numpy, against NumPy references), and the bundle contract that carries the baseline."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from runtime.contracts.bundle.baseline import Bins, DriftBaseline, DriftThresholds
from runtime.contracts.errors import BundleError
from runtime.drift.alarm import AlarmState, Transition, step
from runtime.drift.binning import bin_counts, psi, quantile_edges
from runtime.drift.reference import DriftBaselineError, build_baseline
from runtime.drift.sketch import DriftSketch


def _data(n=600, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 1, 4, 4)) + shift).astype(np.float32)
    logits = np.stack([x.reshape(n, -1)[:, :3].sum(1), -x.reshape(n, -1)[:, 3:6].sum(1),
                       x.reshape(n, -1)[:, 6:9].mean(1)], axis=1).astype(np.float32)
    return {"x": x}, {"y": logits}


@pytest.fixture(scope="module")
def baseline():
    inputs, outputs = _data()
    return build_baseline(inputs=inputs, outputs=outputs, class_output="y")


def test_psi_matches_its_numpy_definition():
    rng = np.random.default_rng(1)
    ref, live = rng.standard_normal(5000), rng.standard_normal(800) * 1.5 + 0.3
    edges = quantile_edges(ref)
    p = bin_counts(edges, ref) / ref.size
    q = bin_counts(edges, live) / live.size
    want = np.sum((np.maximum(q, 1e-4) - np.maximum(p, 1e-4)) * np.log(np.maximum(q, 1e-4) / np.maximum(p, 1e-4)))
    assert psi(p, bin_counts(edges, live)) == pytest.approx(want)
    assert len(edges) == 9 and np.all(np.diff(edges) > 0)
    assert np.allclose(p, 0.1, atol=0.002)  # deciles
    assert psi(p, bin_counts(edges, ref)) == pytest.approx(0.0, abs=1e-12)


def test_baseline_layout_and_round_trip(baseline):
    b = baseline
    assert b.samples == 600 and set(b.tensors) == {"x", "y"}
    x = b.tensors["x"]
    assert x.role.value == "input" and x.feature_axis == "flat" and len(x.feature_proportions) == 16
    assert b.classes.output == "y" and len(b.classes.proportions) == 3 and b.classes.softmax
    assert DriftBaseline.from_json(b.to_json(), where="drift") == b
    assert b.thresholds == DriftThresholds()


def test_same_distribution_scores_low_and_a_shift_scores_high(baseline):
    same_in, same_out = _data(n=500, seed=7)
    shifted_in, shifted_out = _data(n=500, seed=8, shift=1.0)
    for (feeds, outs), lo in (((same_in, same_out), True), ((shifted_in, shifted_out), False)):
        sk = DriftSketch(baseline, window_slots=5)
        for i in range(5):  # five checks of 100 requests of batch 1
            sk.add(({"x": feeds["x"][j:j + 1]}, {"y": outs["y"][j:j + 1]}) for j in range(i * 100, (i + 1) * 100))
            sk.close_slot()
        scores = {(s.kind, s.name): s for s in sk.scores()}
        assert sk.window_rows == 500
        if lo:
            assert scores[("input", "x")].psi < 0.05 and scores[("class", "y")].psi < 0.05
            assert scores[("input", "x")].out_of_range_share < 0.01
        else:
            assert scores[("input", "x")].psi > 0.25 and scores[("input", "x")].feature_psi_max > 0.25
            assert scores[("class", "y")].psi > 0.1


def test_the_window_slides_and_memory_is_fixed(baseline):
    feeds, outs = _data(n=100, seed=3)
    sk = DriftSketch(baseline, window_slots=3)
    sizes, rows = [], []
    for _ in range(20):
        sk.add([(feeds, outs)])
        sk.close_slot()
        sizes.append(sk._ring.nbytes)
        rows.append(sk.window_rows)
    assert rows == [100, 200] + [300] * 18 and sk.closed == 20 and len(set(sizes)) == 1


def test_nan_inf_and_out_of_range_are_counted(baseline):
    x = np.zeros((10, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    x[1, 0, 0, 0] = np.inf
    x[2] = 100.0  # all 16 values of one sample far outside the validation range
    sk = DriftSketch(baseline)
    sk.add([({"x": x}, {"y": np.zeros((10, 3), np.float32)})])
    sk.close_slot()
    s = {(s.kind, s.name): s for s in sk.scores()}[("input", "x")]
    assert s.nonfinite_share == pytest.approx(2 / 160) and s.out_of_range_share == pytest.approx(16 / 160)


def test_sustained_alarm_rule():
    st, seen = AlarmState(), []
    for over in [True, True, False, True, True, True, True, False, False, False, True]:
        st, tr = step(st, over, sustain=3)
        seen.append(tr)
    assert seen == [None, None, None, None, None, Transition.RAISED, None, None, None, Transition.CLEARED, None]
    with pytest.raises(ValueError):
        step(st, True, sustain=0)


def test_a_broken_baseline_is_refused(baseline):
    inputs, outputs = _data(n=150)
    inputs["x"][3, 0, 1, 1] = np.nan
    with pytest.raises(DriftBaselineError, match="input 'x': 1 NaN/Inf"):
        build_baseline(inputs=inputs, outputs=outputs)
    with pytest.raises(DriftBaselineError, match="needs at least 100"):
        build_baseline(inputs={"x": inputs["x"][:50]}, outputs={})
    with pytest.raises(DriftBaselineError, match="not \\[samples, classes\\]"):
        build_baseline(inputs=_data()[0], outputs={"y": np.zeros((600, 3, 2), np.float32)}, class_output="y")
    d = baseline.to_json()
    for mutate, needle in [
        (lambda d: d["tensors"]["x"]["values"]["edges"].reverse(), "strictly increasing"),
        (lambda d: d["tensors"]["x"]["values"]["proportions"].pop(), "values, need"),
        (lambda d: d["tensors"]["y"]["values"]["proportions"].__setitem__(0, 0.9), "summing to 1"),
        (lambda d: d["tensors"]["x"].update(min=5.0), "is above max"),
        (lambda d: d["thresholds"].update(psi=0), "must be > 0"),
        (lambda d: d["classes"].update(output="z"), "not one of the tensors"),
        (lambda d: d["tensors"]["x"]["values"]["edges"].__setitem__(0, float("nan")), "finite number"),
        (lambda d: d["tensors"]["x"]["values"].update(edges=[i / 100 for i in range(65)],
                                                       proportions=[1 / 66] * 66), "x.values.edges: 65 edges, at most 64"),
        (lambda d: d["tensors"]["x"].update(min=d["tensors"]["x"]["values"]["edges"][0] + 1e-6),
         "tensors.x.values.edges: must lie within min"),
        (lambda d: d["tensors"]["y"].update(max=d["tensors"]["y"]["values"]["edges"][-1] - 1e-6),
         "tensors.y.values.edges: must lie within min"),
    ]:
        bad = copy.deepcopy(d)
        mutate(bad)
        with pytest.raises(BundleError, match=needle):
            DriftBaseline.from_json(bad, where="drift")
    assert Bins.from_json({"edges": [], "proportions": [1.0]}, where="b").proportions == (1.0,)
    edge = copy.deepcopy(d)  # edges on min and max are within them (ties at package time)
    e = edge["tensors"]["x"]["values"]["edges"]
    edge["tensors"]["x"].update(min=e[0], max=e[-1])
    assert DriftBaseline.from_json(edge, where="drift").tensors["x"].min == e[0]


def test_many_edges_bin_alike_by_search_and_by_comparison():
    """A baseline built in code (the strict reader caps edges at 64) with 300 edges: a value can
    be at or under more than 255 of them, which the large-batch comparison path must still count
    (it once summed in uint8 and wrapped, reporting finite values as NaN/Inf)."""
    from runtime.contracts.bundle.baseline import Role, TensorBaseline

    ne = 300
    t = TensorBaseline(role=Role.INPUT, min=-4.0, max=4.0,
                       values=Bins(edges=tuple(np.linspace(-2.5, 2.5, ne).tolist()), proportions=(1 / (ne + 1),) * (ne + 1)))
    b = DriftBaseline(samples=600, thresholds=DriftThresholds(), tensors={"x": t})
    data = np.random.default_rng(0).standard_normal((2000, 4)).astype(np.float32)
    data[0, 0] = 5.0  # above max

    def scores(batch_rows):
        sk = DriftSketch(b, window_slots=1)
        for s in range(0, 2000, batch_rows):  # one add: one batch, binned by search up to 4096 values
            sk.add([({"x": data[i:i + 10]}, {}) for i in range(s, s + batch_rows, 10)])
        sk.close_slot()
        return sk.scores()[0]

    small, large = scores(1000), scores(2000)  # batches of 4000 values (search), of 8000 (comparison)
    assert small == large and large.nonfinite_share == 0.0 and large.out_of_range_share == pytest.approx(1 / 8000)


def test_the_sketch_scores_what_a_direct_numpy_count_gives(baseline):
    """Differential: the flat-vector sketch against counting each distribution on its own."""
    from runtime.drift.binning import bin_counts, feature_rows, softmax_max

    feeds, outs = _data(n=300, seed=11, shift=0.4)
    sk = DriftSketch(baseline)
    sk.add(({"x": feeds["x"][i:i + 1]}, {"y": outs["y"][i:i + 1]}) for i in range(300))
    sk.close_slot()
    got = {(s.kind, s.name): s for s in sk.scores()}
    for name, a in (("x", feeds["x"]), ("y", outs["y"])):
        t = baseline.tensors[name]
        edges = np.asarray(t.values.edges)
        want = psi(np.asarray(t.values.proportions), bin_counts(edges, a))
        assert got[(t.role.value, name)].psi == pytest.approx(want, rel=1e-9)
        rows = feature_rows(a, t.feature_axis)
        fmax = max(psi(np.asarray(p), bin_counts(edges, rows[:, j])) for j, p in enumerate(t.feature_proportions))
        assert got[(t.role.value, name)].feature_psi_max == pytest.approx(fmax, rel=1e-9)
        oor = np.count_nonzero((a < t.min) | (a > t.max)) / a.size
        assert got[(t.role.value, name)].out_of_range_share == pytest.approx(oor)
    c = baseline.classes
    y = outs["y"].astype(np.float64)
    assert got[("class", "y")].psi == pytest.approx(psi(np.asarray(c.proportions), np.bincount(y.argmax(1), minlength=3)))
    ce = np.asarray(c.confidence.edges)
    assert got[("confidence", "y")].psi == pytest.approx(
        psi(np.asarray(c.confidence.proportions), bin_counts(ce, softmax_max(y))))


def _reference_counts(t, a):
    """The binning definition applied value by value: (ext bins pooled, baseline bins per feature)."""
    from runtime.drift.binning import feature_rows

    ext = np.concatenate([[np.nextafter(t.min, -np.inf)], t.values.edges, [t.max]])
    x = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(x)
    pooled = np.bincount(np.searchsorted(ext, x[ok], side="left"), minlength=len(ext) + 1)
    rows, okr = feature_rows(x, t.feature_axis), feature_rows(ok, t.feature_axis)
    nb = len(t.values.edges) + 1
    feats = [np.bincount(np.clip(np.searchsorted(ext, rows[okr[:, j], j], side="left"), 1, nb) - 1, minlength=nb)
             for j in range(rows.shape[1])]
    return pooled, np.concatenate(feats)


@pytest.mark.parametrize("search", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_the_count_vector_matches_value_by_value_binning(dtype, search, monkeypatch):
    """Channel layout, ties exactly on the edges, NaN/Inf, out of range, several chunks; binned
    by binary search (small batches) and by comparison with every edge (large ones)."""
    import runtime.drift.sketch as sketch_mod

    rng = np.random.default_rng(5)
    val = np.round(rng.standard_normal((300, 3, 5, 5)) * 4).astype(dtype)  # integers: many ties on edges
    b = build_baseline(inputs={"img": val}, outputs={"p": rng.random((300, 2))})
    t = b.tensors["img"]
    assert t.feature_axis == "channel"
    live = np.round(rng.standard_normal((40, 3, 5, 5)) * 5).astype(dtype)
    if dtype != np.int16:
        live[0, 0, 0, :2] = [np.nan, np.inf]
        live[1, 2, 1, 1] = -np.inf
        live[2, 1] = np.asarray(t.values.edges[2], dtype=dtype)  # exactly on an edge
    monkeypatch.setattr(sketch_mod, "_CHUNK_CELLS", 5000)  # forces several chunks
    monkeypatch.setattr(sketch_mod, "_SEARCH_VALUES", 1 << 30 if search else 0)
    sk = DriftSketch(b)
    sk.add([({"img": live[i:i + 4]}, {"p": rng.random((4, 2))}) for i in range(0, 40, 4)])
    lay = next(x for x in sk._lay.tensors if x.name == "img")
    pooled, feats = _reference_counts(t, live)
    width = len(lay.ext) + 1
    rows = sk.current[lay.feat_off[0]:lay.feat_off[0] + lay.n_features * width].reshape(lay.n_features, width)
    rows = rows[:, ::-1]  # a row is stored from the last bin down
    nonfinite = rows[:, 0].sum() + rows[:, -2:].sum()  # the -Inf, +Inf and NaN bins of each feature's row
    got_pooled = np.concatenate([[rows[:, 1].sum()], rows[:, 2:-3].sum(axis=0), [rows[:, -3].sum()]])
    assert got_pooled.tolist() == pooled.tolist()  # below min, the baseline's bins, above max
    nb = width - 5  # out of range joins the first / the last bin of a feature
    got_feats = np.concatenate([rows[:, 1:2] + rows[:, 2:3], rows[:, 3:nb + 1], rows[:, nb + 1:nb + 2]
                                + rows[:, nb + 2:nb + 3]], axis=1)
    assert got_feats.ravel().tolist() == feats.tolist()
    bad = 0 if dtype == np.int16 else 3
    assert nonfinite == bad and rows.sum() == live.size and sk.current[lay.rows_pos] == 40  # samples
    sk.close_slot()
    s = {(s.kind, s.name): s for s in sk.scores()}[("input", "img")]
    assert s.nonfinite_share == pytest.approx(bad / live.size)
