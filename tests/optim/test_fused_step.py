"""The fused step (one kernel call, or its NumPy twin) against the chain it replaces.

A fused configuration (clip by value / per-variable norm / global norm,
the rule, the learning rate, momentum, decoupled weight decay; Nadam's
scalar slot) performs the operations of its chain in the same order, so
its parameters and slots equal the unfused chain's bit for bit, on either
backend. The twin is the same chain with ``scale(1.0)`` appended, a link
the planner does not fuse and that changes no bit (``x * 1 == x``).
"""

import math

import numpy as np
import pytest

from normlab import optimizers as O
from normlab.kernels import _backend
from normlab.kernels import _optim_numpy as NP
from normlab.kernels import optim as K
from normlab.optim import schedules
from normlab.optim import transforms as T

PATHS = [False, True] if _backend.NUMBA_AVAILABLE else [False]
SHAPES = ((5, 4), (7,), (3, 3), (1,))
SCHEDULE = {"class_name": "ExponentialDecay",
            "config": {"initial_learning_rate": 0.05, "decay_steps": 2, "decay_rate": 0.7}}

CONFIGS = {
    "adamw": lambda: O.AdamW(learning_rate=0.01, weight_decay=0.1),
    "adamw torch amsgrad": lambda: O.AdamW(learning_rate=0.01, weight_decay=0.01, amsgrad=True,
                                           epsilon=1e-8, epsilon_form="torch"),
    "adam clipvalue": lambda: O.Adam(learning_rate=0.01, clipvalue=0.5),
    "adam clipnorm": lambda: O.Adam(learning_rate=0.01, clipnorm=1.0),
    "adam global clipnorm": lambda: O.Adam(learning_rate=0.01, global_clipnorm=2.0),
    "nadam": lambda: O.Nadam(learning_rate=0.01),
    "nadam decay clipnorm": lambda: O.Nadam(learning_rate=0.01, weight_decay=0.05, clipnorm=0.8,
                                            momentum_decay=0.004),
    "sgd momentum weight decay": lambda: O.SGD(learning_rate=0.05, momentum=0.9, weight_decay=0.01),
    "sgd nesterov global clipnorm": lambda: O.SGD(learning_rate=schedules.deserialize(SCHEDULE), momentum=0.8,
                                                  nesterov=True, global_clipnorm=1.0, weight_decay=0.1),
    "rmsprop centered momentum clipvalue": lambda: O.RMSprop(learning_rate=0.01, centered=True, momentum=0.5,
                                                             clipvalue=0.3),
    "adagrad clipnorm": lambda: O.Adagrad(learning_rate=0.1, clipnorm=0.5),
    "lion weight decay clipnorm": lambda: O.Lion(learning_rate=0.01, weight_decay=0.1, clipnorm=1.0),
}
NORM_CLIPPED = {name for name in CONFIGS if "clipnorm" in name}


def unfused(opt):
    """The same chain with a link the planner does not fuse (an exact no-op)."""
    return O.ChainOptimizer(T.chain(opt._transform, T.scale(1.0)), learning_rate=opt.learning_rate,
                            on_nonfinite=opt.on_nonfinite)


def trajectory(make, dtype, numba, steps=5, seed=4, scale=3.0, bad_step=None):
    """Parameters, state and norms after ``steps`` bound steps on fixed random gradients."""
    previous = _backend.use_numba(numba)
    try:
        rng = np.random.default_rng(seed)
        opt = make()
        params, grads = opt.bind([rng.standard_normal(s).astype(dtype) for s in SHAPES])
        fused = opt._binding.fused is not None
        norms, errors = [], []
        for k in range(steps):
            for g in grads:
                g[...] = rng.standard_normal(g.shape) * scale
            if k == bad_step:
                grads[2][1, 1] = np.nan
            try:
                opt.step()
            except FloatingPointError as exc:
                errors.append(str(exc))
            norms.append(opt.last_global_norm)
        return [p.copy() for p in params], opt.get_state(), np.array(norms), fused, errors
    finally:
        _backend.use_numba(previous)


def assert_same(a, b, norms=True):
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        np.testing.assert_array_equal(a[1][key], b[1][key], err_msg=key)
    if norms:
        np.testing.assert_array_equal(a[2], b[2])
    assert [e.split(": ", 1)[1] for e in a[4]] == [e.split(": ", 1)[1] for e in b[4]]  # class names aside


@pytest.mark.parametrize("numba", PATHS, ids=lambda v: "numba" if v else "numpy")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_configuration_equals_its_unfused_chain_bit_for_bit(name, dtype, numba):
    make = CONFIGS[name]
    fused = trajectory(make, dtype, numba)
    plain = trajectory(lambda: unfused(make()), dtype, numba)
    assert fused[3] and not plain[3]
    # without a norm clip the fused kernel sums the norm itself (vector partial sums in numba)
    assert_same(fused, plain, norms=name in NORM_CLIPPED or not numba)
    np.testing.assert_allclose(fused[2], plain[2], rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.skipif(len(PATHS) < 2, reason="numba is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_numba_and_numpy_agree(name, dtype):
    """Bit for bit, except where a clipped norm (a sum in another order) scales the gradients."""
    a, b = trajectory(CONFIGS[name], dtype, True), trajectory(CONFIGS[name], dtype, False)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-6 if dtype == np.float32 else 1e-14)
    if name not in NORM_CLIPPED:
        assert_same(a, b, norms=False)
        return
    # the norm is below the clip: both scale by exactly 1
    a, b = (trajectory(CONFIGS[name], dtype, numba, scale=1e-3) for numba in (True, False))
    assert_same(a, b, norms=False)


@pytest.mark.parametrize("numba", PATHS, ids=lambda v: "numba" if v else "numpy")
@pytest.mark.parametrize("on_nonfinite", ["raise", "skip", "proceed"])
@pytest.mark.parametrize("name", ["adam clipnorm", "sgd nesterov global clipnorm", "adam clipvalue", "adamw"])
def test_non_finite_gradients_are_handled_as_by_the_chain(name, on_nonfinite, numba):
    def make():
        opt = CONFIGS[name]()
        config = {k: getattr(opt, k) for k in opt._hyper + ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm")}
        return type(opt)(learning_rate=opt.learning_rate, on_nonfinite=on_nonfinite, **config)

    fused = trajectory(make, np.float32, numba, bad_step=2)
    plain = trajectory(lambda: unfused(make()), np.float32, numba, bad_step=2)
    assert fused[3] and not plain[3]
    assert_same(fused, plain, norms=False)
    assert math.isnan(fused[2][2]) and math.isnan(plain[2][2])
    state = fused[1]
    assert int(state["iterations"]) == (5 if on_nonfinite == "proceed" else 4)
    assert int(state["skipped_steps"]) == (1 if on_nonfinite == "skip" else 0)
    assert len(fused[4]) == (on_nonfinite == "raise")
    if on_nonfinite == "proceed" and "clipvalue" not in name and "adamw" not in name:
        assert np.isnan(fused[0][2]).all()  # a non-finite norm makes the clipped gradients NaN (Keras)


@pytest.mark.skipif(len(PATHS) < 2, reason="numba is not installed")
@pytest.mark.parametrize("name", ["nadam decay clipnorm", "rmsprop centered momentum clipvalue"])
def test_switching_backends_between_steps_and_saving_after_an_odd_step(name):
    """The NumPy step writes the slots into a second copy and names it live: every reader follows."""
    ref = trajectory(CONFIGS[name], np.float64, True, steps=4)
    rng = np.random.default_rng(4)
    opt = CONFIGS[name]()
    params, grads = opt.bind([rng.standard_normal(s) for s in SHAPES])
    previous = _backend.use_numba(False)
    try:
        for k in range(4):
            _backend.use_numba(k % 2 == 1)
            for g in grads:
                g[...] = rng.standard_normal(g.shape) * 3
            opt.step()
            if k == 0:  # after one NumPy step the second copy is live
                saved = opt.get_state()
                copy = CONFIGS[name]()
                copy.set_state(saved)
                copy.bind([p.copy() for p in params])
                assert all(np.array_equal(copy.get_state()[key], saved[key]) for key in saved)
                opt.bind(list(params))  # rebinding to the same shapes keeps the live slots
                params, grads = opt._binding.params, opt._binding.grads
                assert all(np.array_equal(opt.get_state()[key], saved[key]) for key in saved)
    finally:
        _backend.use_numba(previous)
    for a, b in zip(params, ref[0]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    for key in ref[1]:
        np.testing.assert_allclose(opt.get_state()[key], ref[1][key], rtol=1e-12, err_msg=key)


def test_a_user_chain_of_the_fused_form_is_fused_and_its_scalar_slot_saved():
    tx = T.chain(T.clip_by_norm(1.0), T.scale_by_nadam(), T.scale_by_learning_rate(), T.add_decayed_weights(0.1))
    opt = O.ChainOptimizer(tx, learning_rate=0.01)
    params, grads = opt.bind([np.ones((2, 3), np.float32), np.ones(4, np.float32)])
    assert opt._binding.fused is not None and opt.flat_buffers is None  # per-variable clip: no flat chain
    for g in grads:
        g[...] = 2.0
    opt.step()
    opt.step()
    state = opt.get_state()
    mu = [0.9 * (1 - 0.5 * 0.96**t) for t in (1, 2)]
    assert state["u_product"] == pytest.approx(mu[0] * mu[1], rel=1e-15)
    assert sorted(state) == ["iterations", "momentum/0", "momentum/1", "skipped_steps", "u_product",
                             "velocity/0", "velocity/1"]


# ------------------------------------------------------- the NumPy step's traced ufunc calls
RULE_CONSTS = {
    "sgd": (),
    "adagrad": (0.1, True),
    "rmsprop": (0.9, 0.1, 1e-3, False),
    "rmsprop_centered": (0.9, 0.1, 1e-3, True),
    "adam": (0.1, 0.001, 1e-7, 0.3, 0.9, True),
    "adam_amsgrad": (0.1, 0.001, 1e-8, 0.3, 0.9, False),
    "nadam": (0.1, 0.001, 1e-7, 0.4, 0.8, 0.3, 0.5, True),
    "lion": (0.9, 0.1, 0.99, 0.01),
    "momentum": (0.9, True),
}


def special(rng, shape, dtype):
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    flat[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40]
    return a


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(RULE_CONSTS))
def test_traced_rule_equals_the_rule_on_arrays(name, dtype, inplace, rng, monkeypatch):
    monkeypatch.setattr(NP, "CHUNK", 16)  # 3 slices and a remainder
    rule = getattr(K, name)
    consts = tuple(c if isinstance(c, bool) else dtype(c) for c in RULE_CONSTS[name])
    shape = (7, 6)
    g = special(rng, shape, dtype)
    slots = [np.abs(special(rng, shape, dtype)) for _ in rule.slots]
    with np.errstate(all="ignore"):
        expected = rule.fn(g.copy(), *[s.copy() for s in slots], *consts)
        out = g if inplace else np.empty_like(g)
        K.apply_rule(rule, g, slots, consts, out)
    for got, want in zip([out, *slots], expected):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)


def test_traced_step_writes_outputs_in_place_only_after_the_last_read(rng):
    def fn(a, b, c):  # the new a is needed before b is read for the last time
        a2 = a * c
        return a2, b + a2 * a

    a, b = rng.standard_normal(10), rng.standard_normal(10)
    want = fn(a.copy(), b.copy(), 0.5)
    K.apply_elementwise(fn, [a, b, 0.5], [b, a], ((0, 1), (1, 0)))
    np.testing.assert_array_equal(b, want[0])
    np.testing.assert_array_equal(a, want[1])


def test_untraceable_functions_and_strided_arrays_are_evaluated_whole(rng):
    def branchy(a, b):
        return (a if a.sum() > 0 else b) * 2.0  # a branch on a value cannot be traced

    a, b = rng.standard_normal(8), rng.standard_normal(8)
    out = np.empty(8)
    K.apply_elementwise(branchy, [a, b], [out])
    np.testing.assert_array_equal(out, branchy(a, b))
    strided = rng.standard_normal(16)[::2]
    out = np.empty(8)
    K.apply_elementwise(K.decay, [strided, a, 0.5], [out])
    np.testing.assert_array_equal(out, strided + a * 0.5)


@pytest.mark.skipif(not _backend.NUMBA_AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_clip_equals_numpy_clip_for_clipvalue_bounds(dtype):
    from numba import njit

    from normlab.kernels._optim_numba import clip_scalar

    clip = njit(clip_scalar)
    xs = np.array([0.0, -0.0, 0.5, -0.5, 2.0, -2.0, np.inf, -np.inf, np.nan, 1e-40, 3e38, -3e38], dtype)
    for c in (0.5, 2.0, 1e-40, np.inf):
        lo, hi = dtype(-c), dtype(c)
        got = np.array([clip(x, lo, hi) for x in xs], dtype)
        assert got.tobytes() == np.clip(xs, lo, hi).tobytes()


def traces(fn, args, n_out):
    """Whether ``fn(*args)`` (flags passed as they are) compiles into ufunc calls."""
    static = {i: a for i, a in enumerate(args) if isinstance(a, bool)}
    dynamic = [a for i, a in enumerate(args) if i not in static]
    return NP.program(fn, dynamic, static, [np.empty(4, np.float32) for _ in range(n_out)], ()) is not None


@pytest.mark.parametrize("name", sorted(RULE_CONSTS))
def test_every_rule_and_its_fused_step_trace(name):
    """Tracing, not the slower whole-array evaluation, runs every rule of the library on NumPy."""
    rule = getattr(K, name)
    consts = [c if isinstance(c, bool) else np.float32(c) for c in RULE_CONSTS[name]]
    g, p, slots, m = np.ones(4, np.float32), np.ones(4, np.float32), [np.ones(4, np.float32) for _ in rule.slots], \
        np.ones(4, np.float32)
    assert traces(rule.fn, [g, *slots, *consts], 1 + len(slots))
    if name == "momentum":
        return
    scale, lo, hi, neg_lr, beta, nesterov, f = np.float32(0.5), np.float32(-1), np.float32(1), np.float32(-0.1), \
        np.float32(0.9), True, np.float32(-0.01)
    for pre in ("", "clip", "scale"):
        step = K._step_function(K.StepKind(rule, pre, True, True))
        assert traces(step, [g, p, *slots, m, *consts, scale, lo, hi, neg_lr, beta, nesterov, f], 2 + len(slots))
