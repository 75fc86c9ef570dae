"""Optimizer classes: every update rule recomputed by hand, order of a step, state, errors."""

import io
import json
import math

import numpy as np
import pytest

from normlab import optimizers as O
from normlab import regularizers
from normlab._validation import InvalidParameterError, _as_constraint, _keras_sentence
from normlab.optimizers import schedules

SHAPES = ((3, 4), (5,))
CLASSES = [O.SGD, O.Adagrad, O.RMSprop, O.Adam, O.AdamW, O.Nadam]


def make_params(seed=0, dtype=np.float64):
    r = np.random.default_rng(seed)
    return [r.standard_normal(s).astype(dtype) for s in SHAPES]


def grad_seq(n, seed=1, dtype=np.float64, scale=1.0):
    r = np.random.default_rng(seed)
    return [[(r.standard_normal(s) * scale).astype(dtype) for s in SHAPES] for _ in range(n)]


def run(opt, params, grads):
    params = [p.copy() for p in params]
    for g in grads:
        opt.apply(g, params)
    return params


def check(opt, ref_step, n=6, rtol=1e-13, lrs=None):
    """Run ``opt`` and the hand-written ``ref_step(t, g, w, st, lr)`` side by side, per parameter."""
    w0, grads = make_params(), grad_seq(n)
    got = run(opt, w0, grads)
    ref = [p.copy() for p in w0]
    states = [dict() for _ in ref]
    for t, gs in enumerate(grads, start=1):
        lr = lrs(t - 1) if lrs else opt.learning_rate
        for i, g in enumerate(gs):
            ref[i] = ref_step(t, g, ref[i], states[i], lr)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-15)
    assert opt.iterations == n
    return got, ref


# ------------------------------------------------------------- update rules
def test_sgd_plain():
    check(O.SGD(0.1), lambda t, g, w, st, lr: w - lr * g)


def test_sgd_momentum_keras_velocity_form():
    def step(t, g, w, st, lr):
        st["v"] = 0.9 * st.get("v", 0.0) - lr * g
        return w + st["v"]

    check(O.SGD(0.05, momentum=0.9), step)


def test_sgd_nesterov_keras_form():
    def step(t, g, w, st, lr):
        st["v"] = 0.9 * st.get("v", 0.0) - lr * g
        return w + 0.9 * st["v"] - lr * g

    check(O.SGD(0.05, momentum=0.9, nesterov=True), step)


def quad():
    """J(w) = 1/2 w^T A w - b^T w, an ill-conditioned bowl."""
    A = np.array([[3.0, 1.2], [1.2, 1.0]])
    b = np.array([1.0, -2.0])
    return A, b, (lambda w: A @ w - b), np.linalg.solve(A, b)


def test_exact_nesterov_is_the_notes_algorithm_and_keras_form_is_its_change_of_variables():
    A, b, grad, _ = quad()
    alpha, beta, n = 0.1, 0.8, 25
    # the notes, literally
    theta, v = np.array([2.0, 2.0]), np.zeros(2)
    thetas, interims = [], []
    for _ in range(n):
        interim = theta + beta * v
        g = grad(interim)
        v = beta * v - alpha * g
        theta = theta + v
        thetas.append(theta.copy())
        interims.append(theta + beta * v)
    exact = O.SGD(alpha, momentum=beta, nesterov="exact")
    keras = O.SGD(alpha, momentum=beta, nesterov=True)
    we, wk = np.array([2.0, 2.0]), np.array([2.0, 2.0])
    for k in range(n):
        exact.apply([grad(we)], [we])  # the model takes the gradient at its parameters
        keras.apply([grad(wk)], [wk])
        st = exact.get_state()
        np.testing.assert_allclose(st["theta/0"], thetas[k], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(we, interims[k], rtol=1e-13, atol=1e-15)
        # Keras's parameters are the notes' interim points
        np.testing.assert_allclose(wk, interims[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(wk - beta * keras.get_state()["momentum/0"], thetas[k], rtol=1e-12, atol=1e-14)
    # finalize: parameters become theta, velocity restarts, the invariant params = theta + beta v holds
    exact.finalize_variable_values([we])
    np.testing.assert_array_equal(we, exact.get_state()["theta/0"])
    assert not exact.get_state()["momentum/0"].any()
    keras.finalize_variable_values([wk])  # a no-op elsewhere
    np.testing.assert_allclose(wk, interims[-1], rtol=1e-12)


def test_exact_nesterov_weight_decay_acts_on_theta():
    g = grad_seq(4)
    lr, beta, wd = 0.1, 0.5, 0.2
    opt = O.SGD(lr, momentum=beta, nesterov="exact", weight_decay=wd)
    w = make_params()
    theta, v = [p.copy() for p in w], [np.zeros_like(p) for p in w]
    for gs in g:
        opt.apply(gs, w)
        for i, gi in enumerate(gs):
            v[i] = beta * v[i] - lr * gi
            theta[i] = theta[i] - lr * wd * theta[i] + v[i]
            np.testing.assert_allclose(w[i], theta[i] + beta * v[i], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("form", ["keras", "torch"])
def test_adagrad(form):
    def step(t, g, w, st, lr):
        st["r"] = st.get("r", 0.2) + g * g
        d = np.sqrt(st["r"] + 1e-3) if form == "keras" else np.sqrt(st["r"]) + 1e-3
        return w - lr * g / d

    check(O.Adagrad(0.3, initial_accumulator_value=0.2, epsilon=1e-3, epsilon_form=form), step)


def test_adagrad_notes_form():
    """The notes: r <- r + g*g; theta <- theta - alpha / (delta + sqrt(r)) * g, r starting at 0."""

    def step(t, g, w, st, lr):
        st["r"] = st.get("r", 0.0) + g * g
        return w - lr / (1e-7 + np.sqrt(st["r"])) * g

    check(O.Adagrad(0.01, initial_accumulator_value=0.0, epsilon=1e-7, epsilon_form="torch"), step)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.7])
@pytest.mark.parametrize("form", ["keras", "torch"])
def test_rmsprop(centered, momentum, form):
    rho, eps = 0.85, 1e-3

    def step(t, g, w, st, lr):
        st["r"] = rho * st.get("r", 0.0) + (1 - rho) * g * g
        d = st["r"]
        if centered:
            st["a"] = rho * st.get("a", 0.0) + (1 - rho) * g
            d = d - st["a"] ** 2
        inc = lr * g / (np.sqrt(d + eps) if form == "keras" else np.sqrt(d) + eps)
        if momentum:  # Keras: m <- momentum m + inc; w <- w - m
            st["m"] = momentum * st.get("m", 0.0) + inc
            return w - st["m"]
        return w - inc

    check(O.RMSprop(0.01, rho=rho, momentum=momentum, epsilon=eps, centered=centered, epsilon_form=form), step)


def test_rmsprop_nesterov_is_the_notes_algorithm():
    """RMSProp with Nesterov momentum, as in the notes, with the gradient at theta + beta v."""
    A, b, grad, _ = quad()
    alpha, beta, rho, n = 0.01, 0.9, 0.9, 30
    theta, v, r = np.array([2.0, -1.0]), np.zeros(2), np.zeros(2)
    interims = []
    for _ in range(n):
        g = grad(theta + beta * v)
        r = rho * r + (1 - rho) * g * g
        v = beta * v - alpha / np.sqrt(r) * g
        theta = theta + v
        interims.append(theta + beta * v)
    opt = O.RMSprop(alpha, rho=rho, momentum=beta, epsilon=0.0, nesterov=True)
    w = np.array([2.0, -1.0])
    for k in range(n):
        opt.apply([grad(w)], [w])
        np.testing.assert_allclose(w, interims[k], rtol=1e-12, atol=1e-14)
    # the notes' iterate: theta = w - beta v, with v the slot "momentum"
    np.testing.assert_allclose(w - beta * opt.get_state()["momentum/0"], theta, rtol=1e-12)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_keras_epsilon_hat(amsgrad):
    b1, b2, eps = 0.8, 0.95, 1e-3

    def step(t, g, w, st, lr):
        st["m"] = st.get("m", 0.0) + (g - st.get("m", 0.0)) * (1 - b1)
        st["v"] = st.get("v", 0.0) + (g * g - st.get("v", 0.0)) * (1 - b2)
        v = st["v"]
        if amsgrad:
            st["vh"] = np.maximum(st.get("vh", 0.0), v)
            v = st["vh"]
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        return w - alpha * st["m"] / (np.sqrt(v) + eps)

    check(O.Adam(0.01, beta_1=b1, beta_2=b2, epsilon=eps, amsgrad=amsgrad), step)


def test_adam_paper_form():
    b1, b2, eps = 0.9, 0.999, 1e-3

    def step(t, g, w, st, lr):  # Kingma & Ba, Algorithm 1
        st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
        st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
        m_hat, v_hat = st["m"] / (1 - b1**t), st["v"] / (1 - b2**t)
        return w - lr * m_hat / (np.sqrt(v_hat) + eps)

    check(O.Adam(0.01, epsilon=eps, epsilon_form="torch"), step)


def test_adam_forms_agree_with_converted_epsilon_at_one_step():
    """epsilon_keras = epsilon_torch * sqrt(1 - beta_2^t): exact at a given t, not across steps."""
    w0, g = make_params(), grad_seq(3)
    e = 1e-2
    for t in (1, 2, 3):
        a = run(O.Adam(0.01, epsilon=e * math.sqrt(1 - 0.999**t)), w0, g[:t])
        b = run(O.Adam(0.01, epsilon=e, epsilon_form="torch"), w0, g[:t])
        if t == 1:
            for x, y in zip(a, b):
                np.testing.assert_allclose(x, y, rtol=1e-13)
        else:  # earlier steps used another epsilon: no constant converts the forms
            assert not np.allclose(a[0], b[0], rtol=1e-12, atol=0)


def test_adamw_decouples_the_decay():
    b1, b2, eps, wd = 0.9, 0.999, 1e-7, 0.05

    def step(t, g, w, st, lr):
        w = w - w * wd * lr  # Keras: decay first, then the Adam rule (which never sees it)
        st["m"] = st.get("m", 0.0) + (g - st.get("m", 0.0)) * (1 - b1)
        st["v"] = st.get("v", 0.0) + (g * g - st.get("v", 0.0)) * (1 - b2)
        return w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * st["m"] / (np.sqrt(st["v"]) + eps)

    check(O.AdamW(0.02, weight_decay=wd), step)
    assert O.AdamW().weight_decay == 0.004


@pytest.mark.parametrize("psi", [1.0, 0.004])
def test_nadam(psi):
    b1, b2, eps = 0.9, 0.999, 1e-7

    def mu(t):
        return b1 * (1 - 0.5 * 0.96 ** (t * psi))

    def step(t, g, w, st, lr):
        st["m"] = st.get("m", 0.0) + (g - st.get("m", 0.0)) * (1 - b1)
        st["v"] = st.get("v", 0.0) + (g * g - st.get("v", 0.0)) * (1 - b2)
        p_t = np.prod([mu(k) for k in range(1, t + 1)])
        p_next = p_t * mu(t + 1)
        m_hat = mu(t + 1) * st["m"] / (1 - p_next) + (1 - mu(t)) * g / (1 - p_t)
        v_hat = st["v"] / (1 - b2**t)
        return w - lr * m_hat / (np.sqrt(v_hat) + eps)

    check(O.Nadam(0.01, momentum_decay=psi), step, n=8)


def test_rules_follow_a_schedule_at_iterations():
    sched = schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)

    def step(t, g, w, st, lr):
        st["v"] = 0.9 * st.get("v", 0.0) - lr * g
        return w + st["v"]

    check(O.SGD(sched, momentum=0.9), step, lrs=lambda k: 0.1 * 0.5 ** (k / 2))


# ------------------------------------------------------------ order of a step
def test_order_regularizer_then_clip_then_decay_then_rule():
    """SGD with momentum, clipnorm and weight decay against the documented order, and not the others."""
    lr, beta, c, wd = 0.1, 0.9, 0.5, 0.2
    reg = regularizers.L2(0.3)
    w0 = make_params()
    opt = O.SGD(lr, momentum=beta, clipnorm=c, weight_decay=wd)
    w = [p.copy() for p in w0]
    ref, v = [p.copy() for p in w0], [np.zeros_like(p) for p in w0]
    alt = {k: ([p.copy() for p in w0], [np.zeros_like(p) for p in w0]) for k in ("decay_after", "coupled", "clip_last")}

    def clip(g):
        n = np.linalg.norm(g)
        return g * (c / n) if n > c else g

    for gs in grad_seq(5, scale=2.0):
        # 1. the model adds the regularizer's gradient to the loss gradient
        opt.apply([g + reg.gradient(p) for g, p in zip(gs, w)], w)
        for i, g in enumerate(gs):
            full = g + reg.gradient(ref[i])
            gc = clip(full)  # 2. clipping
            decayed = ref[i] - ref[i] * wd * lr  # 3. weight decay (on the weights before the step)
            v[i] = beta * v[i] - lr * gc  # 4. the rule
            ref[i] = decayed + v[i]
            # wrong orders, for contrast
            wa, va = alt["decay_after"]
            va[i] = beta * va[i] - lr * clip(g + reg.gradient(wa[i]))
            wa[i] = (wa[i] + va[i]) * (1 - wd * lr)
            wb, vb = alt["coupled"]  # decay through the momentum (an L2 term)
            vb[i] = beta * vb[i] - lr * (clip(g + reg.gradient(wb[i])) + wd * wb[i])
            wb[i] = wb[i] + vb[i]
            wc, vc = alt["clip_last"]  # clipping after adding the decay
            vc[i] = beta * vc[i] - lr * clip(g + reg.gradient(wc[i]) + wd * wc[i])
            wc[i] = wc[i] + vc[i]
    for i in range(len(w)):
        np.testing.assert_allclose(w[i], ref[i], rtol=1e-13)
        for name, (wx, _) in alt.items():
            assert not np.allclose(w[i], wx[i], rtol=1e-6), name


def test_clipvalue_and_global_clipnorm_in_optimizers():
    g = grad_seq(1, scale=3.0)[0]
    w0 = make_params()
    out = run(O.SGD(1.0, clipvalue=0.5), w0, [g])
    for a, p, gi in zip(out, w0, g):
        np.testing.assert_allclose(a, p - np.clip(gi, -0.5, 0.5), rtol=1e-15)
    opt = O.SGD(1.0, global_clipnorm=2.0)
    out = run(opt, w0, [g])
    norm = math.sqrt(sum(float(np.sum(x * x)) for x in g))
    assert opt.last_global_norm == pytest.approx(norm, rel=1e-14)  # before clipping
    step = math.sqrt(sum(float(np.sum((a - p) ** 2)) for a, p in zip(out, w0)))
    assert step == pytest.approx(2.0, rel=1e-13)


# ----------------------------------------------------------------- contract
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_dtype_kept_grads_untouched(cls, dtype):
    params = make_params(dtype=dtype)
    ids = [id(p) for p in params]
    before = [p.copy() for p in params]
    grads = grad_seq(1, dtype=dtype)[0]
    gcopy = [g.copy() for g in grads]
    opt = cls(learning_rate=0.01)
    assert math.isnan(opt.last_global_norm) and opt.iterations == 0
    opt.apply(grads, params, names=["dense/kernel", "dense/bias"])
    assert [id(p) for p in params] == ids
    for p, b, g, gc in zip(params, before, grads, gcopy):
        assert p.dtype == dtype and not np.array_equal(p, b)
        np.testing.assert_array_equal(g, gc)
    for key, arr in opt.get_state().items():
        if "/" in key:
            assert arr.dtype == dtype
    assert opt.last_global_norm == pytest.approx(math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads)), rel=1e-6)


def test_apply_gradients_keras_style():
    w = np.array([1.0, 2.0])
    opt = O.SGD(0.5)
    assert opt.apply_gradients(zip([np.array([1.0, -1.0])], [w])) == 1
    np.testing.assert_array_equal(w, [0.5, 2.5])


def test_learning_rate_settable_and_current_learning_rate():
    opt = O.SGD(0.1)
    w = np.array([1.0])
    opt.apply([np.array([1.0])], [w])
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5 and opt.current_learning_rate == 0.5
    opt.apply([np.array([1.0])], [w])
    np.testing.assert_allclose(w, [1.0 - 0.1 - 0.5])
    with pytest.raises(InvalidParameterError, match="'learning_rate' parameter of SGD"):
        opt.learning_rate = -1.0
    s = schedules.PiecewiseConstantDecay([2], [1.0, 0.1])
    opt.learning_rate = s
    assert opt.learning_rate is s and opt.iterations == 2 and opt.current_learning_rate == 1.0
    opt.apply([np.array([1.0])], [w])
    assert opt.current_learning_rate == 0.1
    opt2 = O.SGD(lambda step: 0.01 * (step + 1))
    assert opt2.current_learning_rate == 0.01
    with pytest.raises(ValueError, match="cannot be saved"):
        opt2.get_config()
    bad = O.SGD(lambda step: -1.0)
    with pytest.raises(ValueError, match="finite float >= 0"):
        bad.apply([np.array([1.0])], [np.array([1.0])])


def test_hyperparameters_are_fixed_after_construction():
    opt = O.SGD(0.1, momentum=0.9)
    with pytest.raises(AttributeError, match="'momentum' is fixed at construction"):
        opt.momentum = 0.5
    opt.name = "renamed"  # harmless


def test_shape_mismatch_and_wrong_count_leave_params_unchanged():
    opt = O.Adam(0.1)
    w = make_params()
    opt.apply(grad_seq(1)[0], w)
    before = [p.copy() for p in w]
    state = opt.get_state()
    with pytest.raises(ValueError, match="parameter 'b'.*shape"):
        opt.apply([np.ones((3, 4)), np.ones(4)], [w[0], np.ones(4)], names=["a", "b"])
    with pytest.raises(ValueError, match="built for 2 parameters"):
        opt.apply([np.ones((3, 4))], [w[0]])
    with pytest.raises(ValueError, match="3 gradients for 2"):
        opt.apply([np.ones((3, 4))] * 3, w)
    for a, b in zip(w, before):
        np.testing.assert_array_equal(a, b)
    for k, v in opt.get_state().items():
        np.testing.assert_array_equal(v, state[k])
    with pytest.raises(TypeError, match="float32 or float64"):
        O.SGD().apply([np.ones(2)], [np.ones(2, dtype=np.int64)])


# --------------------------------------------------------- non-finite grads
def test_nonfinite_raise_names_first_parameter_and_changes_nothing():
    opt = O.Adam(0.1)
    w = make_params()
    opt.apply(grad_seq(1)[0], w)
    before, state = [p.copy() for p in w], opt.get_state()
    g = grad_seq(1, seed=5)[0]
    g[1][0] = np.nan
    with pytest.raises(FloatingPointError, match="'dense_1/bias' holds NaN or inf"):
        opt.apply(g, w, names=["dense_1/kernel", "dense_1/bias"])
    assert math.isnan(opt.last_global_norm) and opt.iterations == 1
    for a, b in zip(w, before):
        np.testing.assert_array_equal(a, b)
    for k, v in opt.get_state().items():
        np.testing.assert_array_equal(v, state[k])
    g[1][0] = 1.0
    g[0][1, 1] = -np.inf
    with pytest.raises(FloatingPointError, match="parameter #0"):
        opt.apply(g, w)


def test_nonfinite_skip_and_proceed():
    opt = O.SGD(0.1, momentum=0.9, on_nonfinite="skip")
    w = make_params()
    opt.apply(grad_seq(1)[0], w)
    before = [p.copy() for p in w]
    bad = grad_seq(1, seed=3)[0]
    bad[0][0, 0] = np.inf
    opt.apply(bad, w)
    assert opt.iterations == 1 and opt.skipped_steps == 1 and opt.last_global_norm == math.inf
    for a, b in zip(w, before):
        np.testing.assert_array_equal(a, b)
    opt.apply(grad_seq(1)[0], w)
    assert opt.iterations == 2 and math.isfinite(opt.last_global_norm)
    p = O.SGD(0.1, on_nonfinite="proceed")
    w = make_params()
    p.apply(bad, w)
    assert np.isinf(w[0][0, 0]) and np.isfinite(w[1]).all() and p.iterations == 1


# ---------------------------------------------------------- state, resume
def _resume_case(make, n_total=8, n_first=3):
    w0, grads = make_params(dtype=np.float32), grad_seq(n_total, dtype=np.float32)
    a = make()
    wa = run(a, w0, grads)
    b = make()
    wb = run(b, w0, grads[:n_first])
    # what a saver does: JSON config + npz arrays without pickle
    cfg = json.loads(json.dumps(O.serialize(b)))
    buf = io.BytesIO()
    np.savez(buf, **b.get_state())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files}
    c = O.deserialize(cfg)
    c.set_state(state)  # before the first step, as a model loader does
    assert c.iterations == n_first and c.current_learning_rate == b.current_learning_rate
    wc = run(c, wb, grads[n_first:])
    for x, y in zip(wa, wc):
        np.testing.assert_array_equal(x, y)
    for k, v in a.get_state().items():
        np.testing.assert_array_equal(v, c.get_state()[k])


@pytest.mark.parametrize(
    "make",
    [
        lambda: O.SGD(0.05, momentum=0.9, nesterov=True, global_clipnorm=1.0),
        lambda: O.SGD(schedules.CosineDecay(0.0, 5, warmup_target=0.1, warmup_steps=3), momentum=0.9, nesterov="exact", weight_decay=0.01),
        lambda: O.Adagrad(0.1, clipvalue=0.3),
        lambda: O.RMSprop(0.01, momentum=0.5, centered=True, nesterov=True),
        lambda: O.Adam(schedules.ExponentialDecay(0.01, 2, 0.5, staircase=True), amsgrad=True, clipnorm=0.8),
        lambda: O.AdamW(0.01, epsilon_form="torch"),
        lambda: O.Nadam(0.01, weight_decay=0.01),
    ],
    ids=["sgd", "sgd-exact", "adagrad", "rmsprop", "adam", "adamw", "nadam"],
)
def test_resume_bit_for_bit(make):
    _resume_case(make)


def test_state_keys_and_set_state_errors():
    opt = O.Nadam()
    st = opt.get_state()
    assert set(st) == {"iterations", "skipped_steps", "u_product"} and st["iterations"].dtype == np.int64
    w = make_params()
    opt.apply(grad_seq(1)[0], w)
    st = opt.get_state()
    assert set(st) == {"iterations", "skipped_steps", "u_product", "momentum/0", "momentum/1", "velocity/0", "velocity/1"}
    assert st["iterations"].shape == () and int(st["iterations"]) == 1
    fresh = O.Nadam()
    missing = dict(st)
    del missing["velocity/1"]
    with pytest.raises(ValueError, match=r"missing \['velocity/1'\]"):
        fresh.set_state(missing)
    with pytest.raises(ValueError, match=r"unexpected \['foo'\]"):
        fresh.set_state({**st, "foo": np.zeros(1)})
    with pytest.raises(ValueError, match=r"has shape \(3, 4\), but another slot of parameter 0 has shape \(3, 5\)"):
        fresh.set_state({**st, "momentum/0": np.zeros((3, 5))})
    with pytest.raises(ValueError, match="'iterations' must be a 0-d integer"):
        fresh.set_state({**st, "iterations": np.array(1.5)})
    with pytest.raises(ValueError, match="no 'iterations'"):
        fresh.set_state({k: v for k, v in st.items() if k != "iterations"})
    with pytest.raises(ValueError, match="'momentum/0' has shape"):
        opt.set_state({**st, "momentum/0": np.zeros(2)})  # built: checked against the slots
    assert fresh.iterations == 0 and fresh.get_state()["u_product"] == 1.0
    # state for other parameters: refused at the first step, nothing changed
    fresh.set_state(st)
    other = [np.ones((3, 4)), np.ones(6)]
    with pytest.raises(ValueError, match="set_state"):
        fresh.apply([np.ones((3, 4)), np.ones(6)], other)
    np.testing.assert_array_equal(other[1], np.ones(6))


def test_state_of_a_stateless_optimizer_and_before_building():
    opt = O.SGD(0.1)
    assert set(opt.get_state()) == {"iterations", "skipped_steps"}
    opt.apply(grad_seq(1)[0], make_params())
    other = O.SGD(0.1)
    other.set_state(opt.get_state())
    assert other.iterations == 1
    other.apply(grad_seq(1)[0], make_params())
    assert other.iterations == 2


# ------------------------------------------------------------ serialization
@pytest.mark.parametrize("cls", CLASSES)
def test_config_round_trip_through_json(cls):
    opt = cls(learning_rate=schedules.InverseTimeDecay(0.1, 10, 0.5), global_clipnorm=2.0, on_nonfinite="skip")
    cfg = json.loads(json.dumps(O.serialize(opt)))
    back = O.deserialize(cfg)
    assert type(back) is cls and back.get_config() == opt.get_config()
    assert back.learning_rate == opt.learning_rate
    assert O.get(cfg).get_config() == opt.get_config()
    assert O.get(opt) is opt and O.get(None) is None


@pytest.mark.parametrize("name,cls", [("sgd", O.SGD), ("adam", O.Adam), ("rmsprop", O.RMSprop), ("adagrad", O.Adagrad),
                                      ("adamw", O.AdamW), ("nadam", O.Nadam), ("RMSprop", O.RMSprop), ("AdamW", O.AdamW)])
def test_get_by_name(name, cls):
    opt = O.get(name)
    assert type(opt) is cls
    assert type(O.get({"class_name": name.lower(), "config": {"learning_rate": 0.5}})) is cls
    with pytest.raises(ValueError, match="Unknown optimizer"):
        O.get("no_such_optimizer")


def test_keras_defaults():
    assert O.SGD().get_config() == {
        "name": "sgd", "learning_rate": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": None,
        "clipnorm": None, "clipvalue": None, "global_clipnorm": None, "on_nonfinite": "raise",
        # Keras 3's base optimizer arguments, with its defaults
        "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None, "gradient_accumulation_steps": None,
    }
    a = O.Adam()
    assert (a.learning_rate, a.beta_1, a.beta_2, a.epsilon, a.amsgrad) == (0.001, 0.9, 0.999, 1e-7, False)
    r = O.RMSprop()
    assert (r.learning_rate, r.rho, r.momentum, r.epsilon, r.centered, r.nesterov) == (0.001, 0.9, 0.0, 1e-7, False, False)
    g = O.Adagrad()
    assert (g.learning_rate, g.initial_accumulator_value, g.epsilon) == (0.001, 0.1, 1e-7)
    assert isinstance(O.SGD(momentum=0).momentum, float)


def test_schedules_module_access():
    import normlab.optimizers.schedules as S
    from normlab.optimizers.schedules import CosineDecay

    assert S is schedules and CosineDecay is schedules.CosineDecay


# ----------------------------------------------------------- invalid values
def _invalid_cases():
    for cls in CLASSES:
        for pname, allowed in cls._param_constraints.items():
            cs = [_as_constraint(c) for c in allowed]
            for bad in [v for c in cs for v in c.invalid_examples()]:
                if not any(c.is_satisfied_by(bad) for c in cs):
                    yield pytest.param(cls, pname, bad, id=f"{cls.__name__}-{pname}-{bad!r}")


@pytest.mark.parametrize("cls,pname,bad", list(_invalid_cases()))
def test_declared_constraints_reject_invalid_values(cls, pname, bad):
    with pytest.raises(InvalidParameterError) as e:
        cls(**{pname: bad})
    msg = str(e.value)
    assert msg.startswith(f"The {pname!r} parameter of {cls.__name__} must be ")
    keras = _keras_sentence(cls, pname, bad)  # Keras's own wording follows, where it has one
    assert msg.endswith(f"Got {bad!r} instead." + ("" if keras is None else f" {keras}"))


def test_message_templates():
    with pytest.raises(InvalidParameterError) as e:
        O.SGD(momentum=1.5)
    assert str(e.value) == ("The 'momentum' parameter of SGD must be a float in the range [0, 1]. Got 1.5 instead. "
                            "`momentum` must be a float between [0, 1].")
    with pytest.raises(InvalidParameterError) as e:
        O.Adam(learning_rate=-0.1)
    assert str(e.value) == (
        "The 'learning_rate' parameter of Adam must be a float in the range [0, inf), a LearningRateSchedule "
        "or a callable. Got -0.1 instead."
    )
    with pytest.raises(InvalidParameterError) as e:
        O.SGD(momentum=-0.5)
    assert "Got -0.5 instead." in str(e.value)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("pair", [("clipnorm", "clipvalue"), ("clipnorm", "global_clipnorm"), ("clipvalue", "global_clipnorm")])
def test_two_clipping_options_rejected(cls, pair):
    values = {pair[0]: 1.0, pair[1]: 2.0}
    with pytest.raises(InvalidParameterError) as e:
        cls(**values)
    first, second = sorted(pair, key=["clipvalue", "clipnorm", "global_clipnorm"].index)
    assert str(e.value) == (
        f"The {second!r} parameter of {cls.__name__} must be None when {first!r} is set (clipvalue, clipnorm "
        f"and global_clipnorm are mutually exclusive). Got {values[second]!r} instead. "
        "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
        + ", ".join(f"{a}={values.get(a)}" for a in ("clipnorm", "clipvalue", "global_clipnorm"))
    )


# -------------------------------------------------------------- convergence
def rosenbrock_grad(w):
    x, y = w
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


@pytest.mark.parametrize(
    "make,steps,tol",
    [
        (lambda: O.SGD(1e-3, momentum=0.9), 5000, 1e-6),
        (lambda: O.SGD(1e-3, momentum=0.9, nesterov=True), 5000, 1e-6),
        (lambda: O.SGD(1e-3, momentum=0.9, nesterov="exact"), 5000, 1e-6),
        (lambda: O.Adagrad(0.5), 5000, 0.05),
        (lambda: O.RMSprop(1e-4, momentum=0.9), 5000, 1e-3),
        (lambda: O.RMSprop(1e-4, momentum=0.9, nesterov=True), 5000, 1e-3),
        (lambda: O.RMSprop(schedules.CosineDecay(2e-3, 5000)), 5000, 0.02),
        (lambda: O.Adam(0.02), 3000, 5e-3),
        (lambda: O.AdamW(0.02, weight_decay=0.0), 3000, 5e-3),
        (lambda: O.Nadam(0.02), 3000, 5e-3),
    ],
    ids=["momentum", "nesterov", "exact", "adagrad", "rmsprop-m", "rmsprop-nesterov", "rmsprop-decay", "adam", "adamw", "nadam"],
)
def test_converges_on_rosenbrock(make, steps, tol):
    opt = make()
    w = np.array([-1.2, 1.0])
    for _ in range(steps):
        opt.apply([rosenbrock_grad(w)], [w])
    assert np.abs(w - 1.0).max() < tol


@pytest.mark.parametrize("cls,lr", [(O.SGD, 0.2), (O.Adagrad, 0.5), (O.RMSprop, 0.01), (O.Adam, 0.05), (O.AdamW, 0.05), (O.Nadam, 0.05)])
def test_converges_on_a_quadratic(cls, lr):
    A, b, grad, w_star = quad()
    extra = {"weight_decay": 0.0} if cls is O.AdamW else {}  # decay would move the minimum
    opt = cls(learning_rate=schedules.ExponentialDecay(lr, 100, 0.7), **extra)
    w = np.array([3.0, -3.0])
    for _ in range(1500):
        opt.apply([grad(w)], [w])
    np.testing.assert_allclose(w, w_star, atol=1e-4)
