"""Every row of docs/notes.md: the notes' formula, written out literally in float64, against the normlab call.

One test (or a few) per row of the "Notes -> normlab" table, in the table's
order. Each computes what the notes write, with NumPy and nothing of
normlab, and compares with the normlab call configured as the table says
(the notes' setting where a default differs). Tolerances are rounding
tolerances of float64 (``rtol`` 1e-12 or tighter unless a loop of many steps
accumulates rounding); random draws are compared exactly, value for value.
"""

from __future__ import annotations

import numpy as np
import pytest

import normlab
from normlab import initializers, optimizers, regularizers
from normlab.layers import (
    BatchNormalization,
    Dense,
    Dropout,
    GaussianNoise,
    InstanceNormalization,
    LayerNormalization,
    NoisyDense,
    WeightNormalization,
)
from normlab.ensemble import Bagging
from normlab.optimizers import schedules
from normlab.preprocessing import MinMaxScaler, StandardScaler

F64 = "float64"
TIGHT = dict(rtol=1e-12, atol=1e-14)


def _x(shape, seed=0, offset=0.0):
    return np.random.default_rng(seed).standard_normal(shape) * 2.0 + offset


# ------------------------------------------------------------------ batch norm
def _notes_bn_forward(x, gamma, beta, eps):
    """Notes 000 (1)-(4) / 001's forward pass, per feature over the mini-batch."""
    m = x.shape[0]
    mu = np.sum(x, axis=0) / m  # (1)
    var = np.sum((x - mu) ** 2, axis=0) / m  # (2)
    xhat = (x - mu) / np.sqrt(var + eps)  # (3)
    return gamma * xhat + beta, mu, var, xhat  # (4)


def _notes_bn_backward(dy, x, gamma, eps):
    """001's "Backward Pass: Summary", term by term."""
    m = x.shape[0]
    mu = np.sum(x, axis=0) / m
    var = np.sum((x - mu) ** 2, axis=0) / m
    xhat = (x - mu) / np.sqrt(var + eps)
    dxhat = dy * gamma
    dvar = np.sum(dxhat * (x - mu) * (-0.5) * (var + eps) ** (-1.5), axis=0)
    dmu = np.sum(dxhat * (-1.0 / np.sqrt(var + eps)), axis=0) + dvar * np.sum(-2.0 * (x - mu), axis=0) / m
    dx = dxhat / np.sqrt(var + eps) + dvar * 2.0 * (x - mu) / m + dmu / m
    dgamma = np.sum(dy * xhat, axis=0)
    dbeta = np.sum(dy, axis=0)
    return dx, dgamma, dbeta


def _bn(**kw):
    layer = BatchNormalization(dtype=F64, **kw)
    layer.build((None, 4))
    rng = np.random.default_rng(7)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, 4)
    layer.params["beta"][...] = rng.standard_normal(4)
    return layer


@pytest.mark.parametrize("eps", [1e-3, 1e-5])
def test_bn_forward_equations_1_to_4(kernel_path, eps):
    layer = _bn(epsilon=eps)
    x = _x((16, 4), offset=3.0)
    z, *_ = _notes_bn_forward(x, layer.params["gamma"], layer.params["beta"], eps)
    np.testing.assert_allclose(layer(x, training=True), z, **TIGHT)


@pytest.mark.parametrize("eps", [1e-3, 1e-5])
def test_bn_backward_summary(kernel_path, eps):
    layer = _bn(epsilon=eps)
    x = _x((16, 4), offset=3.0)
    dy = _x((16, 4), seed=1)
    layer(x, training=True)
    dx = layer.backward(dy)
    ref_dx, ref_dgamma, ref_dbeta = _notes_bn_backward(dy, x, layer.params["gamma"], eps)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["gamma"], ref_dgamma, **TIGHT)
    np.testing.assert_allclose(layer.grads["beta"], ref_dbeta, **TIGHT)


def test_bn_without_epsilon_as_002_and_003_write_it(kernel_path):
    """Notes 002, h = (h - mu) / sqrt(sigma^2), and 003, BN(x) = gamma (x - mu) / sigma + beta: epsilon=0."""
    layer = _bn(epsilon=0)
    x = _x((16, 4), offset=3.0)
    dy = _x((16, 4), seed=1)
    g, b = layer.params["gamma"], layer.params["beta"]
    mu = x.sum(axis=0) / 16
    sigma = np.sqrt(((x - mu) ** 2).sum(axis=0) / 16)
    np.testing.assert_allclose(layer(x, training=True), g * (x - mu) / sigma + b, **TIGHT)
    dx = layer.backward(dy)
    ref_dx, ref_dgamma, ref_dbeta = _notes_bn_backward(dy, x, g, 0.0)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["gamma"], ref_dgamma, **TIGHT)
    np.testing.assert_allclose(layer.grads["beta"], ref_dbeta, **TIGHT)


def test_bn_scale_invariance(kernel_path):
    """Notes 001: BN(Wu) = BN((aW)u), the same d/du, and d/d(aW) = 1/a d/dW (exact with epsilon=0)."""
    u, dy = _x((16, 3)), _x((16, 4), seed=1)
    w = np.random.default_rng(5).standard_normal((3, 4))
    a = 7.5
    out = {}
    for scale in (1.0, a):
        dense = Dense(4, use_bias=False, dtype=F64)
        dense.build((None, 3))
        dense.params["kernel"][...] = scale * w
        bn = _bn(epsilon=0)
        y = bn(dense(u, training=True), training=True)
        du = dense.backward(bn.backward(dy))
        out[scale] = y, du, dense.grads["kernel"].copy()
    (y1, du1, dw1), (ya, dua, dwa) = out[1.0], out[a]
    np.testing.assert_allclose(ya, y1, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dua, du1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dwa, dw1 / a, rtol=1e-10, atol=1e-12)


def test_bn_moving_averages_with_alpha(kernel_path):
    """Notes 002: mu := alpha mean_batch + (1 - alpha) mu, the same for sigma^2: momentum = 1 - alpha."""
    alpha = 0.1
    layer = _bn(momentum=1.0 - alpha)
    mu, var = np.zeros(4), np.ones(4)  # Keras's (and normlab's) initial moving statistics
    for seed in range(3):
        x = _x((16, 4), seed=seed, offset=1.0)
        layer(x, training=True)
        mu = alpha * x.mean(axis=0) + (1 - alpha) * mu
        var = alpha * x.var(axis=0) + (1 - alpha) * var
    np.testing.assert_allclose(layer.buffers["moving_mean"], mu, **TIGHT)
    np.testing.assert_allclose(layer.buffers["moving_variance"], var, **TIGHT)


def test_bn_at_inference_uses_the_moving_statistics(kernel_path):
    """Notes 003, "BN at inference": the moving averages replace the batch statistics."""
    layer = _bn(momentum=0.5)
    layer(_x((16, 4), offset=1.0), training=True)
    x = _x((5, 4), seed=3)
    g, b = layer.params["gamma"], layer.params["beta"]
    mm, mv = layer.buffers["moving_mean"], layer.buffers["moving_variance"]
    np.testing.assert_allclose(layer(x, training=False), g * (x - mm) / np.sqrt(mv + 1e-3) + b, **TIGHT)


def test_bn_inference_with_a_moving_standard_deviation(kernel_path):
    """Notes 003 average the mean and the *standard deviation*: renorm with r = 1, d = 0 keeps that average."""
    m, eps = 0.5, 1e-3
    layer = BatchNormalization(momentum=m, epsilon=eps, renorm=True, renorm_clipping={"rmax": 1, "rmin": 1, "dmax": 0},
                               dtype=F64)
    mu, sd = np.zeros(4), np.ones(4)
    for seed in range(3):
        x = _x((16, 4), seed=seed, offset=1.0)
        z = layer(x, training=True)
        np.testing.assert_allclose(z, (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps), **TIGHT)  # plain BN
        mu = m * mu + (1 - m) * x.mean(axis=0)
        sd = m * sd + (1 - m) * np.sqrt(x.var(axis=0) + eps)
    x = _x((5, 4), seed=9)
    np.testing.assert_allclose(layer(x, training=False), (x - mu) / sd, **TIGHT)


def test_no_bias_needed_before_bn(kernel_path):
    """Notes 002: BN subtracts the batch mean, so a bias before it changes nothing (Dense(use_bias=False))."""
    x = _x((16, 3))
    dense = Dense(4, dtype=F64)
    h = dense(x)
    dense.params["bias"][...] = [1.0, -2.0, 30.0, 0.5]
    bn = _bn()
    np.testing.assert_allclose(bn(dense(x), training=True), bn(h, training=True), rtol=1e-9, atol=1e-12)


def test_bn_worked_example_of_004():
    """Notes 004's 3 x 3 table: normalized values shown truncated to 3 decimals, then scaled and shifted.

    (gamma, beta) = ((1.5, 1, 0.5), (0.5, 0, -0.5)), read off its last columns; the table computes the
    scaled values from the truncated -1.224, so they are compared through the same truncation.
    """
    x = np.array([[1.0, 3.0, 2.0], [2.0, 4.0, 3.0], [3.0, 5.0, 4.0]])
    gamma, beta = np.array([1.5, 1.0, 0.5]), np.array([0.5, 0.0, -0.5])
    layer = BatchNormalization(epsilon=1e-5, dtype=F64)
    layer.build((None, 3))
    layer.params["gamma"][...] = gamma
    layer.params["beta"][...] = beta
    z = layer(x, training=True)
    xhat = (z - beta) / gamma
    np.testing.assert_array_equal(np.trunc(xhat * 1000) / 1000, [[-1.224] * 3, [0.0] * 3, [1.224] * 3])
    table = np.array([[-1.336, -1.224, -1.112], [0.5, 0.0, -0.5], [2.336, 1.224, 0.112]])
    np.testing.assert_allclose(gamma * (np.trunc(xhat * 1000) / 1000) + beta, table, atol=1e-12)
    np.testing.assert_allclose(z, table, atol=2e-3)  # the table's rounding, scaled by gamma = 1.5


# --------------------------------------------------------- other normalizations
def test_layer_normalization_normalizes_each_sample():
    x = _x((5, 6), offset=2.0)
    layer = LayerNormalization(epsilon=1e-5, dtype=F64)
    layer.build((None, 6))
    rng = np.random.default_rng(1)
    layer.params["gamma"][...] = rng.uniform(0.5, 2, 6)
    layer.params["beta"][...] = rng.standard_normal(6)
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    ref = layer.params["gamma"] * (x - mu) / np.sqrt(var + 1e-5) + layer.params["beta"]
    np.testing.assert_allclose(layer(x, training=True), ref, **TIGHT)


def test_instance_normalization_normalizes_each_sample_and_channel():
    x = _x((2, 4, 5, 3), offset=-1.0)
    layer = InstanceNormalization(epsilon=1e-5, dtype=F64)
    layer.build((None, 4, 5, 3))
    layer.params["gamma"][...] = [0.5, 1.0, 2.0]
    layer.params["beta"][...] = [0.1, -0.2, 0.3]
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=(1, 2), keepdims=True)
    ref = layer.params["gamma"] * (x - mu) / np.sqrt(var + 1e-5) + layer.params["beta"]
    np.testing.assert_allclose(layer(x, training=True), ref, **TIGHT)


def test_weight_normalization_direction_and_length():
    """Notes 002: w_hat = w / ||w|| * l, per output unit (v is the direction w, g the length l)."""
    layer = WeightNormalization(Dense(4), data_init=False, dtype=F64)
    x = _x((5, 3))
    layer(x, training=True)
    v, g, b = layer.params["v"], layer.params["g"], layer.params["bias"]
    g[...] = [0.5, 1.0, 2.0, 3.0]
    w_hat = v / np.sqrt(np.sum(v**2, axis=0)) * g
    np.testing.assert_allclose(layer.kernel, w_hat, **TIGHT)
    np.testing.assert_allclose(layer(x, training=True), x @ w_hat + b, **TIGHT)


def test_selu():
    """Klambauer et al. 2017: lambda * (x if x > 0 else alpha (e^x - 1))."""
    lam, alpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    x = np.linspace(-5, 5, 101)
    ref = lam * np.where(x > 0, x, alpha * (np.exp(x) - 1.0))
    np.testing.assert_allclose(normlab.activations.selu(x), ref, **TIGHT)
    layer = Dense(3, activation="selu", kernel_initializer="lecun_normal", dtype=F64)
    y = layer(x.reshape(-1, 1))
    z = x.reshape(-1, 1) @ layer.params["kernel"] + layer.params["bias"]
    np.testing.assert_allclose(y, lam * np.where(z > 0, z, alpha * (np.exp(z) - 1.0)), **TIGHT)


# ------------------------------------------------------------- feature scaling
def test_min_max_scaling():
    x = _x((20, 3), offset=5.0)
    ref = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
    np.testing.assert_allclose(MinMaxScaler().fit_transform(x), ref, **TIGHT)


def test_standardization():
    x = _x((20, 3), offset=5.0)
    mu = x.sum(axis=0) / len(x)
    sigma = np.sqrt(((x - mu) ** 2).sum(axis=0) / len(x))  # the population standard deviation
    np.testing.assert_allclose(StandardScaler().fit_transform(x), (x - mu) / sigma, **TIGHT)


# -------------------------------------------------------------------- clipping
def _one_step(opt, grads, params):
    params = [p.copy() for p in params]
    opt.apply_gradients(zip([g.copy() for g in grads], params))
    return params


def test_clip_by_value():
    g = [np.array([0.5, -3.0, 2.0]), np.array([[-0.2, 7.0]])]
    p = [np.zeros(3), np.zeros((1, 2))]
    out = _one_step(optimizers.SGD(learning_rate=1.0, clipvalue=1.0), g, p)
    for o, gi in zip(out, g):
        np.testing.assert_array_equal(o, -np.clip(gi, -1.0, 1.0))


def test_clip_by_norm_per_variable_and_global():
    g = [np.array([3.0, 4.0]), np.array([0.3, 0.4])]  # norms 5 and 0.5
    p = [np.zeros(2), np.zeros(2)]
    c = 1.0
    out = _one_step(optimizers.SGD(learning_rate=1.0, clipnorm=c), g, p)
    for o, gi in zip(out, g):
        n = np.sqrt(np.sum(gi**2))
        np.testing.assert_allclose(o, -(gi * c / n if n > c else gi), **TIGHT)
    out = _one_step(optimizers.SGD(learning_rate=1.0, global_clipnorm=c), g, p)
    n = np.sqrt(sum(np.sum(gi**2) for gi in g))
    for o, gi in zip(out, g):
        np.testing.assert_allclose(o, -gi * c / n, **TIGHT)


# ---------------------------------------------------------------- penalties
def test_l2_penalty_without_the_one_half():
    """Notes 003: lambda * 1/2 ||w||^2 is normlab's L2(l2=lambda / 2) (Keras drops the 1/2)."""
    lam = 0.01
    w = _x((4, 3))
    reg = regularizers.L2(lam / 2)
    np.testing.assert_allclose(reg.penalty(w), lam * 0.5 * np.sum(w**2), **TIGHT)
    np.testing.assert_allclose(reg.gradient(w), lam * w, **TIGHT)  # d/dw of lambda/2 ||w||^2


def test_l1_penalty():
    lam = 0.01
    w = _x((4, 3))
    reg = regularizers.L1(lam)
    np.testing.assert_allclose(reg.penalty(w), lam * np.sum(np.abs(w)), **TIGHT)
    np.testing.assert_allclose(reg.gradient(w), lam * np.sign(w), **TIGHT)


def test_penalty_enters_the_objective_of_a_layer():
    """J~ = J + lambda Omega(w), on the kernel only (kernel_regularizer) or the bias (bias_regularizer)."""
    lam = 0.01
    layer = Dense(3, kernel_regularizer=regularizers.L2(lam / 2), bias_regularizer=regularizers.L1(lam), dtype=F64)
    layer(_x((2, 4)))
    layer.params["bias"][...] = [0.5, -1.0, 2.0]
    w, b = layer.params["kernel"], layer.params["bias"]
    np.testing.assert_allclose(sum(layer.losses), lam * 0.5 * np.sum(w**2) + lam * np.sum(np.abs(b)), **TIGHT)


# ------------------------------------------------------- noise and dropout
def test_gaussian_noise_on_inputs_or_hidden_units():
    x = _x((6, 5))
    layer = GaussianNoise(0.3, seed=11, dtype=F64)
    y = layer(x, training=True)
    np.testing.assert_array_equal(y, x + 0.3 * np.random.default_rng(11).standard_normal(x.shape))
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_noise_on_the_weights_noisy_dense():
    """Fortunato et al.'s factorized noise: w = mu + sigma * f(e_in) f(e_out)^T, f(e) = sign(e) sqrt(|e|)."""
    x = _x((6, 3))
    layer = NoisyDense(4, seed=5, dtype=F64)
    y = layer(x, training=True)
    rng = np.random.default_rng(5)
    f = lambda e: np.sign(e) * np.sqrt(np.abs(e))  # noqa: E731
    e_in, e_out = f(rng.standard_normal(3)), f(rng.standard_normal(4))
    p = layer.params
    w = p["mu_kernel"] + p["sigma_kernel"] * np.outer(e_in, e_out)
    b = p["mu_bias"] + p["sigma_bias"] * e_out
    np.testing.assert_allclose(y, x @ w + b, **TIGHT)
    np.testing.assert_allclose(layer(x, training=False), x @ p["mu_kernel"] + p["mu_bias"], **TIGHT)


def test_the_notes_dropout():
    """Notes 003: h~ = h with probability p, else 0 (no scaling); at test time W_test = p W."""
    p = 0.8
    x = _x((400, 50)) + 10.0  # no zeros
    layer = Dropout(1 - p, seed=2, scaling="inference", dtype=F64)
    y = layer(x, training=True)
    keep = np.random.default_rng(2).random(x.shape) >= 1 - p  # kept with probability p
    np.testing.assert_array_equal(y, np.where(keep, x, 0.0))
    assert abs(keep.mean() - p) < 0.01
    np.testing.assert_allclose(layer(x, training=False), p * x, **TIGHT)  # (p W) h = W (p h)


# ------------------------------------------------------------ early stopping
def test_early_stopping_meta_algorithm():
    """Notes 003's early-stopping loop over the recorded validation errors gives i*, theta* and the stop."""
    from normlab.callbacks import EarlyStopping, LambdaCallback

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 4)), rng.integers(0, 3, 64)
    xv, yv = rng.standard_normal((64, 4)), rng.integers(0, 3, 64)  # noise: the validation loss soon rises
    model = normlab.Sequential([Dense(32, activation="relu"), Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(0.5, momentum=0.9), loss="sparse_categorical_crossentropy")
    n, P = 4, 3
    snaps = []
    es = EarlyStopping(monitor="val_loss", patience=P, restore_best_weights=True)
    keep = LambdaCallback(on_epoch_end=lambda epoch, logs: snaps.append(model.get_weights()))
    hist = model.fit(x, y, batch_size=16, steps_per_epoch=n, epochs=200, validation_data=(xv, yv),
                     callbacks=[keep, es], seed=0, verbose=0)
    vals = hist.history["val_loss"]
    # the notes' loop, literally
    i, i_star, j, v, theta_star, k = 0, 0, 0, np.inf, None, 0
    while j < P:
        i, j = i + n, j + 1
        v_new = vals[k]
        if v_new < v:
            j, theta_star, i_star, v = 0, snaps[k], i, v_new
        k += 1
    assert len(vals) == k  # stopped after the same evaluation
    assert es.best_step == i_star
    for a, b in zip(model.get_weights(), theta_star):
        np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------------- bagging
def _bagging_member():
    model = normlab.Sequential([Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def test_bagging_averages_members_trained_on_bootstrap_samples():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 3, 40)
    bag = Bagging(_bagging_member, n_estimators=3, seed=0).fit(x, y, epochs=1, batch_size=8)
    for idx in bag.samples_:
        assert len(idx) == len(x) and len(np.unique(idx)) < len(x)  # drawn with replacement
    mean = sum(m.predict(x, verbose=0) for m in bag.estimators_) / 3
    np.testing.assert_allclose(bag.predict(x), mean, rtol=1e-6)


# ---------------------------------------------------------------- optimizers
def _grad(theta):
    """Gradient of sum(a theta^2 / 2 + sin(theta)): varied enough that each rule's terms all matter."""
    return np.array([1.0, 10.0, 0.3]) * theta + np.cos(theta)


THETA0 = np.array([1.5, -2.0, 0.7])
STEPS = 25


def _run(opt, steps=STEPS):
    theta = THETA0.copy()
    for _ in range(steps):
        opt.apply_gradients([(_grad(theta), theta)])
    return theta


def test_sgd_constant_rate():
    a = 0.05
    theta = THETA0.copy()
    for _ in range(STEPS):
        theta = theta - a * _grad(theta)
    np.testing.assert_allclose(_run(optimizers.SGD(learning_rate=a)), theta, **TIGHT)


def test_sgd_gradient_is_the_minibatch_mean():
    """g <- 1/|B| grad_theta sum_i L_i: a model's loss is the mean over the batch (mean squared error here)."""
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    model = normlab.Sequential([Dense(1, dtype=F64)])
    model.compile(optimizer=optimizers.SGD(0.1), loss="mse")
    model.build((None, 3), seed=0)
    w, b = (a.copy() for a in model.get_weights())
    model.train_on_batch(x, t)
    r = x @ w + b - t
    g_w = sum(2 * r[i, 0] * x[i][:, None] for i in range(8)) / 8
    g_b = sum(2 * r[i] for i in range(8)) / 8
    new_w, new_b = model.get_weights()
    np.testing.assert_allclose(new_w, w - 0.1 * g_w, **TIGHT)
    np.testing.assert_allclose(new_b, b - 0.1 * g_b, **TIGHT)


def test_sgd_linear_decay():
    """alpha_k = alpha_0 - k/tau (alpha_0 - alpha_tau) for k <= tau, alpha_tau after (k = steps taken)."""
    a0, a_tau, tau = 0.05, 0.0005, 10
    theta = THETA0.copy()
    for k in range(STEPS):
        a = a0 - k / tau * (a0 - a_tau) if k <= tau else a_tau
        theta = theta - a * _grad(theta)
    opt = optimizers.SGD(learning_rate=schedules.PolynomialDecay(a0, tau, a_tau, power=1.0))
    np.testing.assert_allclose(_run(opt), theta, **TIGHT)


def test_sgd_exponential_decay_of_the_notes_keras_example():
    a0, rate, steps = 0.05, 0.9, 4
    theta = THETA0.copy()
    for k in range(STEPS):
        theta = theta - a0 * rate ** (k / steps) * _grad(theta)
    opt = optimizers.SGD(learning_rate=schedules.ExponentialDecay(a0, steps, rate))
    np.testing.assert_allclose(_run(opt), theta, **TIGHT)


def test_momentum():
    a, beta = 0.02, 0.9
    theta, v = THETA0.copy(), np.zeros(3)
    for _ in range(STEPS):
        v = beta * v - a * _grad(theta)
        theta = theta + v
    np.testing.assert_allclose(_run(optimizers.SGD(a, momentum=beta)), theta, **TIGHT)


def test_nesterov():
    """Notes' Nesterov: the gradient at theta + beta v. nesterov="exact" keeps theta; True holds theta + beta v."""
    a, beta = 0.02, 0.9
    theta, v = THETA0.copy(), np.zeros(3)
    for _ in range(STEPS):
        g = _grad(theta + beta * v)  # interim update
        v = beta * v - a * g
        theta = theta + v
    exact = optimizers.SGD(a, momentum=beta, nesterov="exact")
    params = _run(exact)
    np.testing.assert_allclose(params, theta + beta * v, rtol=1e-11)  # where the next gradient is taken
    exact.finalize_variable_values([params])
    np.testing.assert_allclose(params, theta, rtol=1e-11)
    np.testing.assert_allclose(_run(optimizers.SGD(a, momentum=beta, nesterov=True)), theta + beta * v, rtol=1e-11)


def test_adagrad():
    """Notes: r <- 0; r <- r + g*g; theta <- theta - alpha / (delta + sqrt(r)) * g, delta = 1e-7."""
    a, delta = 0.1, 1e-7
    theta, r = THETA0.copy(), np.zeros(3)
    for _ in range(STEPS):
        g = _grad(theta)
        r = r + g * g
        theta = theta + -a / (delta + np.sqrt(r)) * g
    opt = optimizers.Adagrad(a, initial_accumulator_value=0.0, epsilon=delta, epsilon_form="torch")
    np.testing.assert_allclose(_run(opt), theta, **TIGHT)
    # Keras's defaults differ: r starts at 0.1, epsilon inside the square root
    theta, r = THETA0.copy(), np.full(3, 0.1)
    for _ in range(STEPS):
        g = _grad(theta)
        r = r + g * g
        theta = theta - a * g / np.sqrt(r + 1e-7)
    np.testing.assert_allclose(_run(optimizers.Adagrad(a)), theta, **TIGHT)


def test_rmsprop():
    """Notes: r <- rho r + (1 - rho) g*g; theta <- theta - alpha / (delta + sqrt(r)) * g, delta = 1e-6."""
    a, rho, delta = 0.01, 0.9, 1e-6
    theta, r = THETA0.copy(), np.zeros(3)
    for _ in range(STEPS):
        g = _grad(theta)
        r = rho * r + (1 - rho) * g * g
        theta = theta + -a / (delta + np.sqrt(r)) * g
    opt = optimizers.RMSprop(a, rho=rho, epsilon=delta, epsilon_form="torch")
    np.testing.assert_allclose(_run(opt), theta, **TIGHT)
    theta, r = THETA0.copy(), np.zeros(3)  # Keras's default: 1e-7 inside the square root
    for _ in range(STEPS):
        g = _grad(theta)
        r = rho * r + (1 - rho) * g * g
        theta = theta - a * g / np.sqrt(r + 1e-7)
    np.testing.assert_allclose(_run(optimizers.RMSprop(a, rho=rho)), theta, **TIGHT)


def test_rmsprop_with_nesterov():
    """Notes: theta~ = theta + beta v; g at theta~; r as RMSProp; v <- beta v - alpha / sqrt(r) * g (no delta)."""
    a, rho, beta = 0.01, 0.9, 0.9
    theta, r, v = THETA0.copy(), np.zeros(3), np.zeros(3)
    for _ in range(STEPS):
        g = _grad(theta + beta * v)
        r = rho * r + (1 - rho) * g * g
        v = beta * v - a / np.sqrt(r) * g
        theta = theta + v
    opt = optimizers.RMSprop(a, rho=rho, momentum=beta, nesterov=True, epsilon=0.0)
    np.testing.assert_allclose(_run(opt), theta + beta * v, rtol=1e-11)


def test_adam_paper_and_keras_forms():
    a, b1, b2 = 0.05, 0.9, 0.999
    for form, eps in (("torch", 1e-8), ("keras", 1e-7)):
        theta, m, v = THETA0.copy(), np.zeros(3), np.zeros(3)
        for t in range(1, STEPS + 1):
            g = _grad(theta)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            if form == "torch":  # Kingma and Ba's Algorithm 1
                theta = theta - a * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
            else:  # "epsilon hat", just before their section 2.1 (Keras)
                theta = theta - a * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        opt = optimizers.Adam(a, beta_1=b1, beta_2=b2, epsilon=eps, epsilon_form=form)
        np.testing.assert_allclose(_run(opt), theta, rtol=1e-11)


# --------------------------------------------------------------- initializers
def test_glorot_as_the_notes_write_it():
    """Notes 003: Gaussian, mu = 0, sigma^2 = 2 / (n_in + n_out), not truncated."""
    shape = (30, 50)
    w = initializers.VarianceScaling(1.0, "fan_avg", "untruncated_normal", seed=3)(shape, dtype=F64)
    ref = np.random.default_rng(3).normal(0.0, np.sqrt(2.0 / (30 + 50)), size=shape)
    np.testing.assert_array_equal(w, ref)


def test_glorot_normal_is_truncated():
    """Keras's GlorotNormal (the notes' code): N(0, s^2) redrawn beyond 2 s, s = sqrt(2/(n_in+n_out)) / 0.8796..."""
    shape = (30, 50)
    s = np.sqrt(2.0 / (30 + 50)) / 0.87962566103423978
    rng = np.random.default_rng(3)
    z = rng.standard_normal(shape)
    while (np.abs(z) > 2).any():
        bad = np.abs(z) > 2
        z[bad] = rng.standard_normal(int(bad.sum()))
    np.testing.assert_allclose(initializers.GlorotNormal(seed=3)(shape, dtype=F64), z * s, **TIGHT)
    big = initializers.GlorotNormal(seed=0)((400, 600), dtype=F64)
    assert abs(big.var() / (2.0 / 1000) - 1) < 0.02  # the variance asked for, despite the cut


def test_other_initializers():
    shape = (20, 40)
    n_in, n_out = shape
    cases = [
        (initializers.RandomNormal(0.0, 0.05, seed=1), lambda r: r.normal(0.0, 0.05, size=shape)),
        (initializers.RandomUniform(-0.05, 0.05, seed=1), lambda r: r.uniform(-0.05, 0.05, size=shape)),
        (initializers.GlorotUniform(seed=1), lambda r: r.uniform(-1, 1, size=shape) * np.sqrt(6 / (n_in + n_out))),
        (initializers.HeUniform(seed=1), lambda r: r.uniform(-1, 1, size=shape) * np.sqrt(6 / n_in)),
        (initializers.LecunUniform(seed=1), lambda r: r.uniform(-1, 1, size=shape) * np.sqrt(3 / n_in)),
        (initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=1),
         lambda r: r.normal(0.0, np.sqrt(2 / n_in), size=shape)),
    ]
    for init, literal in cases:
        np.testing.assert_allclose(init(shape, dtype=F64), literal(np.random.default_rng(1)), **TIGHT, err_msg=repr(init))
