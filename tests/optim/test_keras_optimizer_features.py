"""Keras 3's optimizer features: ``exclude_from_weight_decay``, ``use_ema`` and ``gradient_accumulation_steps``.

The ported tests name their Keras test (``keras/src/optimizers/optimizer_test.py``
and ``adam_test.py``, Keras 3). The numerics are checked against a plain
NumPy transcription of Keras's ``BaseOptimizer.apply`` (``_keras_reference``),
and, where keras is installed, against Keras itself.
"""

import json
import math
import sys

import numpy as np
import pytest

import normlab
from normlab import optimizers as O
from normlab._validation import InvalidParameterError
from normlab.optim import schedules

CLASSES = [O.SGD, O.Adam, O.AdamW, O.Adagrad, O.RMSprop, O.Nadam, O.Lion]


def _slot(opt, key):
    return opt.get_state()[key]


# ------------------------------------------------------------ ported from Keras
def test_ema():
    """Keras: OptimizerTest.test_ema."""
    v = np.array([[3.0, 4.0], [5.0, 6.0]], np.float32)
    grads = np.ones((2, 2), np.float32)
    opt = O.SGD(learning_rate=1.0, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3)
    opt.apply_gradients([(grads, v)])
    np.testing.assert_allclose(v, [[2.0, 3.0], [4.0, 5.0]])
    np.testing.assert_allclose(_slot(opt, "average/0"), [[2.0, 3.0], [4.0, 5.0]])  # set by the first step
    opt.apply_gradients([(grads, v)])
    np.testing.assert_allclose(v, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(_slot(opt, "average/0"), [[1.9, 2.9], [3.9, 4.9]], rtol=1e-6)
    opt.apply_gradients([(grads, v)])
    # the parameters were overwritten by their averages
    np.testing.assert_allclose(v, [[1.71, 2.71], [3.71, 4.71]], rtol=1e-6)
    np.testing.assert_allclose(_slot(opt, "average/0"), [[1.71, 2.71], [3.71, 4.71]], rtol=1e-6)


def _ema_fit_model():
    model = normlab.Sequential([normlab.layers.Dense(2, kernel_initializer="ones", use_bias=False)])
    opt = O.SGD(learning_rate=0.1, use_ema=True, ema_momentum=0.9)
    model.compile(loss="mse", optimizer=opt)
    # Keras's y is (1, 1), broadcast against the (1, 2) predictions; normlab wants the shapes equal
    model.fit(np.ones((1, 1), np.float32), np.zeros((1, 2), np.float32), batch_size=1, epochs=2, verbose=0)
    return model, opt


def test_ema_with_model_fit():
    """Keras: OptimizerTest.test_ema_with_model_fit (the final overwrite called here: see the next test)."""
    model, opt = _ema_fit_model()
    np.testing.assert_allclose(_slot(opt, "average/0"), [[0.891, 0.891]], atol=1e-5)
    kernel = model.layers[-1].params["kernel"]
    opt.finalize_variable_values([kernel])
    np.testing.assert_allclose(kernel, [[0.891, 0.891]], atol=1e-5)


def test_fit_ends_with_the_moving_averages():
    """Keras: OptimizerTest.test_ema_with_model_fit, without an explicit finalize."""
    model, _ = _ema_fit_model()
    np.testing.assert_allclose(model.layers[-1].params["kernel"], [[0.891, 0.891]], atol=1e-5)


def test_gradient_accumulation():
    """Keras: OptimizerTest.test_gradient_accumulation."""
    v = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    grads = np.ones((2, 2), np.float32)
    opt = O.SGD(learning_rate=1.0, gradient_accumulation_steps=3)
    assert opt.gradient_accumulation_steps == 3
    expected = [  # v, accumulator, calls (Keras's _iterations), iterations
        ([[1.0, 2.0], [3.0, 4.0]], 1.0, 1, 0),
        ([[1.0, 2.0], [3.0, 4.0]], 2.0, 2, 0),
        ([[0.0, 1.0], [2.0, 3.0]], 0.0, 3, 1),
        ([[0.0, 1.0], [2.0, 3.0]], 1.0, 4, 1),
    ]
    for want_v, want_acc, calls, iterations in expected:
        opt.apply_gradients([(grads, v)])
        np.testing.assert_allclose(v, want_v)
        np.testing.assert_allclose(_slot(opt, "gradient_accumulator/0"), np.full((2, 2), want_acc))
        assert opt.iterations * 3 + opt.accumulation_step == calls
        assert opt.iterations == iterations


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_gradient_accumulation_with_weight_decay(cls, rng):
    """Keras: OptimizerTest.test_gradient_accumulation_with_weigth_decay (sic)."""
    opt1 = O.get({"class_name": cls.__name__, "config": {"weight_decay": 0.05}})
    opt3 = O.get({"class_name": cls.__name__, "config": {"weight_decay": 0.05, "gradient_accumulation_steps": 3}})
    v1 = np.array([[0.9], [0.5]], np.float32)
    v3 = v1.copy()
    for _ in range(8):
        grads3 = rng.random((3, 2, 1)).astype(np.float32)
        opt1.apply_gradients([(grads3.mean(axis=0), v1)])
        for batch in range(3):
            opt3.apply_gradients([(grads3[batch], v3)])
    np.testing.assert_allclose(v1, v3, rtol=1e-6, atol=1e-6)  # Keras's assertAllClose
    assert opt1.iterations == opt3.iterations == 8


def test_weight_decay_exclusions():
    """Keras: AdamTest.test_weight_decay (the same test is in each optimizer's test file)."""
    zero = np.zeros((), np.float32)
    var1, var2, var3 = (np.array(2.0, np.float32) for _ in range(3))
    O.Adam(learning_rate=1.0, weight_decay=0.004).apply_gradients(zip([zero], [var1]))
    opt2 = O.Adam(learning_rate=1.0, weight_decay=0.004)
    opt2.exclude_from_weight_decay(var_names=["exclude"])
    opt2.apply([zero, zero], [var1, var2], names=["var1", "exclude"])
    opt3 = O.Adam(learning_rate=1.0, weight_decay=0.004)
    opt3.exclude_from_weight_decay(var_list=[var3])
    opt3.apply_gradients(zip([zero, zero], [var1, var3]))
    assert float(var1) == pytest.approx(1.9760959, abs=1e-6)
    assert float(var2) == pytest.approx(2.0, abs=1e-6)
    assert float(var3) == pytest.approx(2.0, abs=1e-6)


# ---------------------------------------------------- Keras's formulas in NumPy
def _keras_reference(params, grads_seq, *, lr, wd, decays, ema, momentum, freq, n, beta_1=0.9, beta_2=0.999,
                     eps=1e-7):
    """Keras 3's Adam ``apply`` (base_optimizer.py), literally: float64 lists, ``lr(calls)``."""
    w = [p.copy() for p in params]
    acc = [np.zeros_like(p) for p in params]
    avg = [np.zeros_like(p) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for calls, g in enumerate(grads_seq):
        it = calls // n if n else calls  # Keras's optimizer.iterations
        update = not n or (calls + 1) % n == 0
        if n and not update:
            acc = [a + gi for a, gi in zip(acc, g)]
        else:
            if n:
                g = [(gi + a) / n for gi, a in zip(g, acc)]
                acc = [np.zeros_like(a) for a in acc]
            rate = lr(calls)
            for i in range(len(w)):
                if wd and decays[i]:
                    w[i] = w[i] - w[i] * wd * rate
                t = it + 1
                alpha = rate * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
                m[i] = m[i] + (g[i] - m[i]) * (1 - beta_1)
                v[i] = v[i] + (g[i] ** 2 - v[i]) * (1 - beta_2)
                w[i] = w[i] - alpha * m[i] / (np.sqrt(v[i]) + eps)
        if ema:
            mm = 0.0 if it == 0 else momentum
            avg = [mm * a + (1 - mm) * wi for a, wi in zip(avg, w)]
            if freq and (it + 1) % freq == 0:
                w = [a.copy() for a in avg]
    return w, avg, acc


NUMERIC_CASES = {
    "ema": dict(ema=True, momentum=0.8, freq=None, n=None, wd=None),
    "ema overwrite": dict(ema=True, momentum=0.7, freq=2, n=None, wd=0.1),
    "accumulation": dict(ema=False, momentum=0.99, freq=None, n=3, wd=0.1),
    "all": dict(ema=True, momentum=0.9, freq=3, n=2, wd=0.2),
}


@pytest.mark.parametrize("case", sorted(NUMERIC_CASES))
def test_against_keras_formulas_in_numpy(case, rng, kernel_path):
    c = NUMERIC_CASES[case]
    shapes = [(3, 4), (4,), (4, 2)]
    names = ["d/kernel", "d/bias", "e/kernel"]
    params = [rng.standard_normal(s) for s in shapes]
    grads_seq = [[rng.standard_normal(s) for s in shapes] for _ in range(13)]
    sched = schedules.ExponentialDecay(0.05, decay_steps=4, decay_rate=0.5)
    opt = O.Adam(learning_rate=sched, weight_decay=c["wd"], use_ema=c["ema"], ema_momentum=c["momentum"],
                 ema_overwrite_frequency=c["freq"], gradient_accumulation_steps=c["n"])
    opt.exclude_from_weight_decay(var_names=["bias"])
    ours = [p.copy() for p in params]
    for g in grads_seq:
        opt.apply(g, ours, names=names)
    w, avg, acc = _keras_reference(params, grads_seq, lr=lambda s: 0.05 * 0.5 ** (s / 4), wd=c["wd"],
                                   decays=[True, False, True], ema=c["ema"], momentum=c["momentum"],
                                   freq=c["freq"], n=c["n"])
    state = opt.get_state()
    for i in range(3):
        np.testing.assert_allclose(ours[i], w[i], rtol=1e-12, atol=1e-14)
        if c["ema"]:
            np.testing.assert_allclose(state[f"average/{i}"], avg[i], rtol=1e-12, atol=1e-14)
        if c["n"]:
            np.testing.assert_allclose(state[f"gradient_accumulator/{i}"], acc[i], rtol=1e-12, atol=1e-14)
    assert opt.iterations == (13 // c["n"] if c["n"] else 13)
    if c["n"]:
        assert opt.accumulation_step == 13 % c["n"] and state["accumulation_step"] == 13 % c["n"]


def test_excluded_parameters_take_the_rule_without_the_decay(rng):
    params = [rng.standard_normal((3, 2)), rng.standard_normal(2)]
    grads = [rng.standard_normal((3, 2)), rng.standard_normal(2)]
    plain = [p.copy() for p in params]
    O.AdamW(learning_rate=0.1, weight_decay=0.0).apply(grads, plain)
    decayed = [p.copy() for p in params]
    opt = O.AdamW(learning_rate=0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.apply(grads, decayed, names=["dense/kernel", "dense/bias"])
    np.testing.assert_array_equal(decayed[1], plain[1])
    assert not np.allclose(decayed[0], plain[0])
    with pytest.raises(ValueError, match="AdamW.exclude_from_weight_decay: can only be configured before"):
        opt.exclude_from_weight_decay(var_names=["kernel"])


def test_exclusions_in_fit_match_the_layer_paths(rng):
    x = rng.standard_normal((16, 3)).astype(np.float32)
    y = rng.standard_normal((16, 2)).astype(np.float32)
    model = normlab.Sequential([normlab.layers.Dense(2, bias_initializer="ones")])
    model.compile(optimizer=O.SGD(learning_rate=0.1, weight_decay=0.5), loss="mse")
    opt2 = O.SGD(learning_rate=0.1, weight_decay=0.5)
    opt2.exclude_from_weight_decay(var_names=["/bias"])
    model2 = normlab.Sequential([normlab.layers.Dense(2, bias_initializer="ones")])
    model2.compile(optimizer=opt2, loss="mse")
    model2.build((None, 3))
    model.build((None, 3))
    model2.set_weights(model.get_weights())
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    model2.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    bias, bias2 = model.layers[-1].params["bias"], model2.layers[-1].params["bias"]
    kernel, kernel2 = model.layers[-1].params["kernel"], model2.layers[-1].params["kernel"]
    np.testing.assert_array_equal(kernel, kernel2)  # the kernel decays in both
    # without the decay, the bias is the other's plus lr * wd * bias_before = 0.1 * 0.5 * 1
    np.testing.assert_allclose(bias2 - bias, 0.05, rtol=1e-5)


# ------------------------------------------------------------------ transaction
def _interrupted_at(opt, k):
    seen = [0]

    def tracer(frame, event, arg):
        if event == "line":
            if seen[0] == k:
                raise KeyboardInterrupt(f"line {k}")
            seen[0] += 1
        return tracer

    sys.settrace(tracer)
    try:
        opt.step()
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(None)
    return False


def _bound(calls):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,)]
    opt = O.Adam(learning_rate=0.01, weight_decay=0.1, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=2,
                 gradient_accumulation_steps=2)
    opt.exclude_from_weight_decay(var_names=["b"])
    params, grads = opt.bind([rng.standard_normal(s).astype(np.float32) for s in shapes],
                             [np.zeros(s, np.float32) for s in shapes], ["a", "b"])
    for k in range(calls + 1):
        for g in grads:
            g[...] = rng.standard_normal(g.shape)
        if k < calls:
            opt.step()
    return opt, params


def _snapshot(opt, params):
    out = {f"param/{i}": p.copy() for i, p in enumerate(params)}
    out.update(opt.get_state())
    return out


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("calls", [2, 3, 5], ids=["accumulating call", "update", "update and overwrite"])
def test_an_interrupt_leaves_the_call_undone_or_done(calls):
    opt, params = _bound(calls)
    before = _snapshot(opt, params)
    counted = []

    def counter(frame, event, arg):
        if event == "line":
            counted.append(1)
        return counter

    sys.settrace(counter)
    try:
        opt.step()
    finally:
        sys.settrace(None)
    after = _snapshot(opt, params)
    assert not _same(before, after)
    outcomes = set()
    for k in range(len(counted)):
        opt, params = _bound(calls)
        assert _interrupted_at(opt, k)
        state = _snapshot(opt, params)
        if _same(state, before):
            outcomes.add("before")
        elif _same(state, after):
            outcomes.add("after")
        else:
            changed = [key for key in state if not np.array_equal(state[key], before[key])]
            pytest.fail(f"interrupted at line {k} of {len(counted)}: a mix of before and after ({changed})")
    assert "before" in outcomes


# ---------------------------------------------------------- state and config
def _features():
    return dict(weight_decay=0.01, use_ema=True, ema_momentum=0.95, ema_overwrite_frequency=4,
                gradient_accumulation_steps=3)


def test_save_and_load_continue_bit_for_bit(tmp_path, rng):
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.standard_normal((40, 2)).astype(np.float32)

    def make():
        model = normlab.Sequential([normlab.layers.Dense(4, activation="relu"), normlab.layers.Dense(2)])
        model.compile(optimizer=O.Adam(learning_rate=0.01, **_features()), loss="mse")
        return model

    normlab.utils.set_random_seed(3)
    model = make()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)  # 5 calls: 1 update, 2 accumulated
    state = model.optimizer.get_state()
    assert {"average/0", "gradient_accumulator/0", "accumulation_step"} <= set(state)
    assert int(state["accumulation_step"]) == 2 and int(state["iterations"]) == 1
    model.save(tmp_path / "m.npz")
    back = normlab.load_model(tmp_path / "m.npz")
    assert back.optimizer.get_config() == model.optimizer.get_config()
    loaded = back.optimizer.get_state()
    assert loaded.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(loaded[key], state[key])
        assert loaded[key].dtype == state[key].dtype
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    back.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    for key, a in model.optimizer.get_state().items():
        np.testing.assert_array_equal(back.optimizer.get_state()[key], a)


def test_set_state_round_trip_before_binding(rng):
    params = [rng.standard_normal((2, 3)), rng.standard_normal(3)]
    opt = O.SGD(learning_rate=0.1, momentum=0.9, **_features())
    for _ in range(4):
        opt.apply([rng.standard_normal(p.shape) for p in params], params)
    other = O.SGD(learning_rate=0.1, momentum=0.9, **_features())
    other.set_state(opt.get_state())
    assert other.accumulation_step == opt.accumulation_step == 1
    mine = [p.copy() for p in params]
    g = [rng.standard_normal(p.shape) for p in params]
    for _ in range(3):
        opt.apply(g, params)
        other.apply(g, mine)
    for a, b in zip(params, mine):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_config_round_trip(cls):
    opt = cls(**_features())
    cfg = opt.get_config()
    for key, value in _features().items():
        assert cfg[key] == value
    assert type(cfg["ema_overwrite_frequency"]) is int and type(cfg["gradient_accumulation_steps"]) is int
    back = O.deserialize(json.loads(json.dumps(O.serialize(opt))))
    assert type(back) is cls and back.get_config() == cfg
    with pytest.raises(AttributeError, match="fixed at construction"):
        opt.use_ema = False


def test_defaults_are_keras():
    cfg = O.Adam().get_config()
    assert (cfg["use_ema"], cfg["ema_momentum"], cfg["ema_overwrite_frequency"],
            cfg["gradient_accumulation_steps"]) == (False, 0.99, None, None)


@pytest.mark.parametrize("key,value,expected", [
    ("use_ema", 1, "a bool"),
    ("ema_momentum", 1.5, "a float in the range [0, 1]"),
    ("ema_momentum", -0.1, "a float in the range [0, 1]"),
    ("ema_overwrite_frequency", 0, "an int in the range [1, inf)"),
    ("ema_overwrite_frequency", 2.5, "an int in the range [1, inf)"),
    ("gradient_accumulation_steps", 1, "an int in the range [2, inf)"),
    ("gradient_accumulation_steps", True, "an int in the range [2, inf)"),
])
def test_invalid_arguments(key, value, expected):
    with pytest.raises(InvalidParameterError) as info:
        O.Adam(**{key: value})
    msg = str(info.value)
    assert msg.startswith(f"The '{key}' parameter of Adam must be ") and f"Got {value!r} instead." in msg
    assert expected in msg


def test_invalid_exclusions():
    opt = O.AdamW()
    with pytest.raises(TypeError, match="'var_names' must be a list of strings"):
        opt.exclude_from_weight_decay(var_names="bias")
    with pytest.raises(TypeError, match="'var_list' must hold NumPy arrays"):
        opt.exclude_from_weight_decay(var_list=["bias"])


def test_exclusions_refused_where_the_rule_decays():
    with pytest.raises(ValueError, match="inside its update rule"):
        O.SGD(momentum=0.9, nesterov="exact", weight_decay=0.1).exclude_from_weight_decay(var_names=["bias"])


def test_without_the_features_the_step_stays_fused():
    opt, plain = O.Adam(weight_decay=0.1), O.Adam(weight_decay=0.1, use_ema=True)
    for o in (opt, plain):
        o.bind([np.zeros(4, np.float32)])
    assert opt._binding.fused is not None
    assert plain._binding.fused is None  # the features run on the chain
    masked = O.Adam(weight_decay=0.1)
    masked.exclude_from_weight_decay(var_names=["x"])
    masked.bind([np.zeros(4, np.float32)])
    assert masked._binding.fused is None


# ---------------------------------------------------------------- live Keras
def test_against_keras(rng):
    keras = pytest.importorskip("keras")
    shapes = [(3, 4), (4,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads_seq = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(11)]
    features = dict(weight_decay=0.1, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=2,
                    gradient_accumulation_steps=2)
    kv = [keras.Variable(p, name=n) for p, n in zip(params, ["kernel", "bias"])]
    ko = keras.optimizers.AdamW(learning_rate=keras.optimizers.schedules.ExponentialDecay(0.05, 3, 0.5),
                                **features)
    ko.exclude_from_weight_decay(var_names=["bias"])
    opt = O.AdamW(learning_rate=schedules.ExponentialDecay(0.05, 3, 0.5), **features)
    opt.exclude_from_weight_decay(var_names=["bias"])
    ours = [p.copy() for p in params]
    for g in grads_seq:
        ko.apply_gradients(zip([keras.ops.convert_to_tensor(a) for a in g], kv))
        opt.apply(g, ours, names=["dense/kernel", "dense/bias"])
        for a, b in zip(ours, kv):
            np.testing.assert_allclose(a, keras.ops.convert_to_numpy(b), rtol=2e-6, atol=1e-6)
    assert opt.iterations == int(ko.iterations)
    state = opt.get_state()
    for i, avg in enumerate(ko._model_variables_moving_average):
        np.testing.assert_allclose(state[f"average/{i}"], keras.ops.convert_to_numpy(avg), rtol=2e-6, atol=1e-6)
