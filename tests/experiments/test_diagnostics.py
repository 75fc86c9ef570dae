"""TrainingDiagnostics: percentiles, saturation, dead units, gradient norms, History."""

import numpy as np
import pytest

from normlab import Sequential, InvalidParameterError
from normlab.callbacks import Callback, TrainingDiagnostics
from normlab.layers import Activation, BatchNormalization, Dense

pytest.importorskip("normlab.optimizers")


def _data(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    return x, y


def _model(seed=0):
    m = Sequential(
        [
            Dense(8, activation="relu", name="d_relu"),
            Dense(8, use_bias=False, name="d_lin"),
            BatchNormalization(name="bn"),
            Activation("sigmoid", name="act_sig"),
            Dense(3, activation="softmax", name="out"),
        ]
    )
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


class _GradSnapshot(Callback):
    """Copies every layer's gradients after each step (runs after the diagnostics)."""

    def __init__(self):
        super().__init__()
        self.step = 0
        self.snaps = {}

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.snaps[self.step] = {l.name: [g.copy() for g in l.grads.values()] for l in self.model.layers if l.grads}


def test_records_from_training_batches():
    x, y = _data()
    model = _model()
    diag = TrainingDiagnostics(every=2, units={"act_sig": [0, 3]})
    snap = _GradSnapshot()
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[diag, snap], seed=0)
    steps = [r["step"] for r in diag.records]
    assert steps == [2, 4, 6, 8, 10, 12]
    # watched: the relu Dense and the sigmoid Activation (not the linear Dense or the softmax)
    for r in diag.records:
        assert set(r["layers"]) == {"d_relu", "act_sig"}
        for name, e in r["layers"].items():
            p = e["percentiles"]
            assert len(p) == 3 and p[0] <= p[1] <= p[2]
        assert 0.0 <= r["layers"]["act_sig"]["saturated"] <= 1.0
        assert 0.0 <= r["layers"]["d_relu"]["dead"] <= 1.0
        for u in (0, 3):
            q = r["layers"]["act_sig"]["units"][u]
            assert q[0] <= q[1] <= q[2]
        # gradient norms of every layer with parameters, equal to the norm of its grads
        assert set(r["grad_norms"]) == {"d_relu", "d_lin", "bn", "out"}
        for name, value in r["grad_norms"].items():
            grads = snap.snaps[r["step"]][name]
            expected = np.linalg.norm(np.concatenate([g.ravel() for g in grads]).astype(np.float64))
            assert value > 0
            assert value == pytest.approx(expected, rel=1e-6)
    # epoch summaries land in History
    h = hist.history
    for key in ("d_relu/p15", "d_relu/p50", "d_relu/p85", "d_relu/dead", "act_sig/saturated", "bn/grad_norm"):
        assert key in h and len(h[key]) == 2, key
    assert h["d_relu/p15"][0] <= h["d_relu/p50"][0] <= h["d_relu/p85"][0]
    s, v = diag.series("act_sig", unit=3)
    assert s.tolist() == steps and v.shape == (6, 3)
    s, v = diag.series("bn", "grad_norm")
    assert v.shape == (6,) and np.all(v > 0)


def test_percentiles_match_numpy_on_cached_logits():
    x, y = _data()
    model = _model()

    class Check(Callback):
        def on_train_batch_end(self, batch, logs=None):
            z = self.model.layers[0]._cache.z
            self.expected = np.percentile(z, [10, 90]).tolist()
            self.dead = float(np.mean(np.all(z <= 0, axis=0)))

    diag = TrainingDiagnostics(every=1, percentiles=(10, 90))
    check = Check()
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0, callbacks=[diag, check], seed=1)
    rec = diag.records[-1]["layers"]["d_relu"]
    assert rec["percentiles"] == pytest.approx(check.expected)
    assert rec["dead"] == pytest.approx(check.dead)


def test_dead_relu_and_saturated_sigmoid_detected():
    x, y = _data()
    model = Sequential(
        [
            Dense(5, activation="relu", bias_initializer={"class_name": "Constant", "config": {"value": -100.0}}),
            Dense(4, activation="sigmoid", kernel_initializer={"class_name": "Constant", "config": {"value": 0.0}},
                  bias_initializer={"class_name": "Constant", "config": {"value": 10.0}}),
            Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    diag = TrainingDiagnostics(every=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[diag], seed=0)
    names = [l.name for l in model.layers]
    r = diag.records[0]["layers"]
    assert r[names[0]]["dead"] == 1.0
    assert r[names[1]]["saturated"] == 1.0


def test_probe_mode_records_step_zero_and_leaves_bn_untouched():
    x, y = _data()
    model = _model()
    probe = x[:40]
    moving = {}

    class Watch(Callback):
        def on_train_batch_end(self, batch, logs=None):
            bn = self.model.layers[2]
            moving[batch] = bn.buffers["moving_mean"].copy()

    for stats in ("batch", "moving"):
        diag = TrainingDiagnostics(every=3, x_probe=probe, probe_statistics=stats)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[Watch(), diag], seed=0)
        assert [r["step"] for r in diag.records] == [0, 3, 6]
        assert diag.records[0]["grad_norms"] == {} and diag.records[1]["grad_norms"]
        bn = model.layers[2]
        # the probe did not move the moving statistics recorded after the last step
        np.testing.assert_array_equal(bn.buffers["moving_mean"], moving[5])
        p = diag.records[-1]["layers"]["act_sig"]["percentiles"]
        assert p[0] <= p[1] <= p[2]
    # with the probe's own statistics, BN's output (the sigmoid's input) is normalized
    diag = TrainingDiagnostics(every=100, x_probe=probe, probe_statistics="batch", percentiles=(50,))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[diag], seed=0)
    bn = model.layers[2]
    # the last record is taken after the last step, with the weights as they are now
    assert diag.records[-1]["step"] == 6
    z = diag.records[-1]["layers"]["act_sig"]["percentiles"][0]
    h = model.layers[1](model.layers[0](probe))
    ref = (h - h.mean(0)) / np.sqrt(h.var(0) + bn.epsilon) * bn.params["gamma"] + bn.params["beta"]
    assert z == pytest.approx(float(np.percentile(ref, 50)), abs=1e-4)


def test_invalid_arguments():
    with pytest.raises(InvalidParameterError):
        TrainingDiagnostics(every=0)
    with pytest.raises(ValueError, match="percentiles"):
        TrainingDiagnostics(percentiles=(15, 150))
    with pytest.raises(InvalidParameterError):
        TrainingDiagnostics(probe_statistics="running")
    x, y = _data()
    model = _model()
    with pytest.raises(ValueError, match="no layer 'nope'"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[TrainingDiagnostics(layers=["nope"])])
    with pytest.raises(ValueError, match="no non-linear activation"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[TrainingDiagnostics(layers=["d_lin"])])


def test_convolutions_are_watched_in_both_modes():
    from normlab.layers import Conv1D, Flatten

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 12, 2)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    model = Sequential([Conv1D(4, 3, activation="relu", name="conv"), Flatten(), Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    for probe in (None, x[:10]):
        diag = TrainingDiagnostics(every=1, x_probe=probe, units={"conv": [1]})
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[diag], seed=0)
        rec = diag.records[-1]
        assert set(rec["layers"]) == {"conv"} and rec["grad_norms"]["conv"] > 0
        e = rec["layers"]["conv"]
        assert e["percentiles"][0] <= e["percentiles"][1] <= e["percentiles"][2]
        assert 0.0 <= e["dead"] <= 1.0 and len(e["units"][1]) == 3
    conv = model.layers[0]
    z = TrainingDiagnostics._logits_of(conv, x[:5])
    np.testing.assert_allclose(np.maximum(z, 0), conv(x[:5]), rtol=1e-6, atol=1e-6)
    assert conv.activation == "relu" and conv(x[:5]).min() >= 0  # the activation was put back
