"""The numba kernels for activation derivatives and max-pool backward equal the NumPy path."""

import math

import numpy as np
import pytest

from normlab.kernels import _backend, activations, pooling
from normlab.optim import schedules

# these tests compare the numba kernels with NumPy: they need numba installed and not switched off
pytestmark = pytest.mark.skipif(not _backend.numba_enabled(), reason="the numba kernels are not installed or are switched off (NORMLAB_DISABLE_NUMBA)")


def both_paths(fn, *args):
    """``fn(*args)`` on the numba kernels and on NumPy."""
    previous = _backend.use_numba(True)
    try:
        fused = fn(*args)
        _backend.use_numba(False)
        plain = fn(*args)
    finally:
        _backend.use_numba(previous)
    return fused, plain


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_backward_bitwise_equal(name, dtype, rng):
    kernel = activations.KERNELS[name]
    z = rng.standard_normal((7, 5, 3)).astype(dtype)
    z[0, 0, :] = 0.0  # relu's kink: the derivative taken as 0 at z = 0 on both paths
    a = kernel.forward(z)
    da = rng.standard_normal(z.shape).astype(dtype)
    fused, plain = both_paths(kernel.backward, da, z, a)
    assert fused.dtype == plain.dtype == dtype
    np.testing.assert_array_equal(fused, plain)


def test_activation_backward_non_contiguous_falls_back(rng):
    z = rng.standard_normal((6, 8))
    da = rng.standard_normal((8, 6)).T  # Fortran-ordered view
    fused, plain = both_paths(activations.relu_backward, da, z, None)
    np.testing.assert_array_equal(fused, plain)
    np.testing.assert_array_equal(plain, da * (z > 0))


@pytest.mark.parametrize(
    "pool, strides, padding",
    [((2, 2), None, "valid"), ((3, 3), (2, 2), "same"), ((3, 2), (1, 1), "valid"), ((2, 2), None, "same")],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_backward_equal(pool, strides, padding, dtype, rng):
    x = rng.standard_normal((3, 7, 6, 4)).astype(dtype)
    x[0, :2, :2, 0] = 1.5  # a tie inside the first window: the first tap gets the gradient
    x[1] = np.round(x[1])  # many ties, also across overlapping windows

    def run(x):
        y, cache = pooling.max_pool2d_forward(x, pool_size=pool, strides=strides, padding=padding)
        dy = np.arange(1, y.size + 1, dtype=dtype).reshape(y.shape)
        return pooling.max_pool2d_backward(dy, cache)

    fused, plain = both_paths(run, x)
    np.testing.assert_array_equal(fused, plain)
    if strides is None:  # disjoint windows: the tied window's gradient sits on its first tap only
        assert fused[0, 0, 0, 0] == 1 and not fused[0, 0, 1, 0] and not fused[0, 1, :2, 0].any()



@pytest.mark.parametrize("pool, strides", [((2, 2), None), ((3, 3), (1, 1))])
def test_max_pool_backward_routes_nan_to_the_maximum_only(pool, strides, rng):
    """A NaN or inf in dy reaches its window's maximum, not the other taps, on both paths."""
    x = rng.standard_normal((2, 6, 6, 3))

    def run(x):
        y, cache = pooling.max_pool2d_forward(x, pool_size=pool, strides=strides)
        dy = np.ones_like(y)
        dy[0, 0, 0, 0], dy[1, 1, 1, 2] = np.nan, np.inf
        return pooling.max_pool2d_backward(dy, cache), cache

    (fused, _), (plain, cache) = both_paths(run, x)
    np.testing.assert_array_equal(fused, plain)
    window = x[0, :pool[0], :pool[1], 0]
    hot = np.unravel_index(np.argmax(window), window.shape)
    assert np.isnan(plain[0, hot[0], hot[1], 0])
    assert np.isnan(plain).sum() == 1 and np.isinf(plain).sum() == 1  # 0 at every other tap

# ------------------------------------------------------------- optimizers
def optimizer_trajectory(make, dtype, steps=6, seed=3, flat=False):
    """Parameters and slots after ``steps`` updates of ``make()`` on fixed random gradients.

    ``flat``: one parameter array (as a model's flat buffer), which takes the
    one-kernel norm-and-step path where an optimizer has one. The state holds
    each step's global norm too (``"norms"``).
    """
    from normlab.optim import optimizers

    rng = np.random.default_rng(seed)
    shapes = [(27,)] if flat else [(5, 4), (7,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    opt = make(optimizers)
    norms = []
    for _ in range(steps):
        grads = [(rng.standard_normal(p.shape) * 3).astype(dtype) for p in params]
        opt.apply(grads, params)
        norms.append(opt.last_global_norm)
    return [p.copy() for p in params], {**opt.get_state(), "norms": np.array(norms)}


SCHEDULE = {"class_name": "ExponentialDecay",
            "config": {"initial_learning_rate": 0.05, "decay_steps": 2, "decay_rate": 0.7}}

OPTIMIZERS = {
    "sgd": lambda o: o.SGD(learning_rate=0.1),
    "sgd schedule": lambda o: o.SGD(learning_rate=schedules.deserialize(SCHEDULE)),
    "momentum": lambda o: o.SGD(learning_rate=0.05, momentum=0.9),
    "nesterov": lambda o: o.SGD(learning_rate=0.05, momentum=0.8, nesterov=True),
    "adam": lambda o: o.Adam(learning_rate=0.01),
    "adam betas": lambda o: o.Adam(learning_rate=0.3, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
    "adamw no decay": lambda o: o.AdamW(learning_rate=0.01, weight_decay=0.0),
    "rmsprop": lambda o: o.RMSprop(learning_rate=0.01),
    "rmsprop torch eps": lambda o: o.RMSprop(learning_rate=0.01, rho=0.8, epsilon=1e-3, epsilon_form="torch"),
    "rmsprop momentum": lambda o: o.RMSprop(learning_rate=0.01, momentum=0.9),
    "rmsprop nesterov": lambda o: o.RMSprop(learning_rate=0.01, momentum=0.5, nesterov=True),
    "adagrad": lambda o: o.Adagrad(learning_rate=0.1),
    "adagrad torch eps": lambda o: o.Adagrad(learning_rate=0.1, initial_accumulator_value=0.0, epsilon=1e-3,
                                             epsilon_form="torch"),
}


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_optimizer_updates_equal_the_chain(name, dtype, flat):
    (fused_p, fused_s), (plain_p, plain_s) = both_paths(optimizer_trajectory, OPTIMIZERS[name], dtype, 6, 3, flat)
    for a, b in zip(fused_p, plain_p):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    # the norm is summed in another order (vector partial sums against BLAS's dot)
    np.testing.assert_allclose(fused_s.pop("norms"), plain_s.pop("norms"), rtol=1e-6 if dtype == np.float32 else 1e-14)
    assert fused_s.keys() == plain_s.keys()
    for key in plain_s:
        np.testing.assert_array_equal(fused_s[key], plain_s[key], err_msg=key)


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip", "proceed"])
def test_one_kernel_sgd_step_handles_non_finite_gradients_as_the_chain(on_nonfinite):
    from normlab.optim import optimizers as o

    def run():
        opt = o.SGD(learning_rate=0.1, on_nonfinite=on_nonfinite)
        p = np.linspace(-1, 1, 9, dtype=np.float32)
        opt.apply([np.ones(9, np.float32)], [p])
        g = np.ones(9, np.float32)
        g[4] = np.inf
        try:
            opt.apply([g], [p])
            raised = None
        except FloatingPointError as exc:
            raised = str(exc)
        return p, opt.iterations, opt.skipped_steps, opt.last_global_norm, raised

    fused, plain = both_paths(run)
    np.testing.assert_array_equal(fused[0], plain[0])
    assert fused[1:] == plain[1:]
    assert fused[1] == (1 if on_nonfinite == "raise" else 2 if on_nonfinite == "proceed" else 1)
    assert (fused[4] is not None) == (on_nonfinite == "raise")
    assert fused[3] == math.inf


def test_fused_optimizer_covers_clipping_weight_decay_and_nadam():
    """What one kernel call covers: a clip (value, per-variable norm or global norm), the rule, the
    learning rate, momentum and decoupled weight decay, Nadam included; not the exact Nesterov form
    nor a chain with another link (a constant scale). That each fused configuration equals its
    unfused chain bit for bit (the same operations in the same order) is checked in
    tests/optim/test_fused_step.py."""
    from normlab.optim import optimizers as o
    from normlab.optim import transforms as T

    g, p = [np.ones(3, np.float32)], [np.zeros(3, np.float32)]
    fused = _backend.numba_enabled()
    assert o.SGD()._fusable(g, p) == fused
    for opt in (o.SGD(clipnorm=1.0), o.SGD(global_clipnorm=1.0), o.Adam(clipvalue=0.5), o.AdamW(), o.Nadam(),
                o.Nadam(weight_decay=0.1, global_clipnorm=1.0), o.SGD(momentum=0.9, nesterov=True, weight_decay=0.1),
                o.RMSprop(momentum=0.5, clipnorm=1.0), o.Lion(weight_decay=0.1, clipvalue=1.0)):
        assert opt._fusable(g, p) == fused, opt
    assert not o.SGD(momentum=0.9, nesterov="exact")._fusable(g, p)
    assert not o.ChainOptimizer(T.chain(T.scale_by_adam(), T.scale_by_learning_rate(), T.scale(1.0)))._fusable(g, p)
    assert not o.SGD()._fusable([np.ones(3, np.float64)], p)  # gradient cast by the chain
    assert not o.SGD()._fusable([np.ones(6, np.float32)[::2]], p)  # strided gradient


# ------------------------------------------- batch norm followed by its activation
from normlab.layers.fused import BatchNormActivation  # noqa: E402
def bn_act_weights(activation, dtype, fuse, bn_first=False, steps=4, batch=16):
    """Weights after ``steps`` SGD steps of a BN net, with the BN + activation backward fused or not."""
    import normlab
    from normlab.layers import Activation, BatchNormalization, Dense

    kw = {"dtype": np.dtype(dtype).name}
    layers = [] if bn_first else [Dense(12, use_bias=False, **kw)]
    layers += [BatchNormalization(**kw), Activation(activation, **kw), Dense(12, use_bias=False, **kw),
               BatchNormalization(center=False, **kw), Activation(activation, **kw),
               Dense(3, activation="softmax", **kw)]
    model = normlab.Sequential(layers)
    # the fused pairs (normlab.layers.fused) run these two methods, which this helper counts
    model.compile(optimizer=normlab.optimizers.SGD(learning_rate=0.5, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    model.build((None, 6), seed=0)
    rng = np.random.default_rng(1)
    calls, forward_calls = [], []

    def counted(f, log):
        def run(*args, **kw):
            out = f(*args, **kw)
            if out is not None:
                log.append(1)
            return out
        return run

    saved = BatchNormActivation._forward, BatchNormActivation._backward
    if fuse:
        BatchNormActivation._forward = counted(saved[0], forward_calls)
        BatchNormActivation._backward = counted(saved[1], calls)
    else:  # the fused pair falls back on the two layers' own passes
        BatchNormActivation._forward = BatchNormActivation._backward = lambda *args, **kw: None
    try:
        for _ in range(steps):
            x = rng.standard_normal((batch, 6)).astype(dtype)
            model.train_on_batch(x, rng.integers(0, 3, batch))
    finally:
        BatchNormActivation._forward, BatchNormActivation._backward = saved
    weights = model.get_weights()
    bn_state = [np.copy(b) for l in model.layers for b in l.buffers.values()]
    return weights + bn_state, len(calls), len(forward_calls)


@pytest.mark.parametrize("batch", [16, 7])  # 7: four-row blocks plus a remainder row loop
@pytest.mark.parametrize("bn_first", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_bn_activation_backward_fused_equals_two_calls(activation, dtype, bn_first, batch):
    fused, n_fused, n_fused_forward = bn_act_weights(activation, dtype, True, bn_first, batch=batch)
    plain, _, _ = bn_act_weights(activation, dtype, False, bn_first, batch=batch)
    assert n_fused == 2 * 4  # both pairs, every step
    # forward fusion: relu, and sigmoid in float32 (tanh stays NumPy's one-pass np.tanh)
    forward_fuses = activation == "relu" or (activation == "sigmoid" and dtype == np.float32)
    assert n_fused_forward == (2 * 4 if forward_fuses else 0)
    for a, b in zip(fused, plain):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


def test_bn_activation_fusion_declines_other_cases(rng):
    from normlab.layers import Activation, BatchNormalization

    bn, act = BatchNormalization(), Activation("elu")
    act(bn(rng.standard_normal((8, 3)), training=True), training=True)
    assert BatchNormActivation(bn, act)._backward(np.ones((8, 3))) is None  # no fused elu
    act = Activation("relu")
    act(bn(rng.standard_normal((8, 3)), training=False), training=True)
    assert BatchNormActivation(bn, act)._backward(np.ones((8, 3))) is None  # inference-mode batch norm
    act(bn(rng.standard_normal((8, 3)), training=True), training=True)
    assert BatchNormActivation(bn, act)._backward(np.ones((8, 3), np.float32)) is None  # dtype mismatch
    assert BatchNormActivation(bn, act)._backward(np.ones((3, 8)).T) is None  # non-contiguous gradient


@pytest.mark.parametrize("activation,dtype", [("relu", np.float32), ("relu", np.float64), ("sigmoid", np.float32)])
# (1101, 60): many rows of few features, which the kernels stream in blocks of
# several rows (with a partial last block)
@pytest.mark.parametrize("shape", [(60, 100), (7, 3), (2, 4, 4, 5), (1101, 60)])
def test_bn_activation_forward_fused_equals_two_calls(activation, dtype, shape, rng):
    from normlab.layers import Activation, BatchNormalization

    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    pairs = [(BatchNormalization(momentum=0.5), Activation(activation)) for _ in range(2)]
    (bn_f, act_f), (bn_p, act_p) = pairs
    for layer in (bn_f, act_f, bn_p, act_p):
        layer._ensure_built(x)
    a_fused = BatchNormActivation(bn_f, act_f)._forward(x)
    a_plain = act_p.call(bn_p.call(x, True), True)
    assert a_fused is not None and a_fused.dtype == dtype and a_fused.shape == shape
    np.testing.assert_array_equal(a_fused, a_plain)
    # the two layers keep what their own calls keep
    np.testing.assert_array_equal(act_f._cache.z, act_p._cache.z)
    np.testing.assert_array_equal(act_f._cache.a, act_p._cache.a)
    assert act_f._out_shape == act_p._out_shape == shape and bn_f._out_shape == shape
    for key in bn_f.buffers:
        np.testing.assert_array_equal(bn_f.buffers[key], bn_p.buffers[key])
    dy = rng.standard_normal(shape).astype(dtype)
    dx_fused = BatchNormActivation(bn_f, act_f)._backward(dy)
    assert dx_fused is not None
    np.testing.assert_array_equal(dx_fused, bn_p.backward(act_p.backward(dy)))
    for key in bn_f.grads:
        np.testing.assert_array_equal(bn_f.grads[key], bn_p.grads[key])


def test_bn_activation_forward_fusion_declines_other_cases(rng):
    from normlab.layers import Activation, BatchNormalization

    x32 = rng.standard_normal((8, 3)).astype(np.float32)
    assert BatchNormActivation(BatchNormalization(), Activation("tanh"))._forward(x32) is None  # np.tanh is one pass
    assert BatchNormActivation(BatchNormalization(), Activation("elu"))._forward(x32) is None
    assert BatchNormActivation(BatchNormalization(), Activation("sigmoid"))._forward(x32.astype(np.float64)) is None
    assert BatchNormActivation(BatchNormalization(renorm=True), Activation("relu"))._forward(x32) is None
    assert BatchNormActivation(BatchNormalization(virtual_batch_size=4), Activation("relu"))._forward(x32) is None
    assert BatchNormActivation(BatchNormalization(axis=0), Activation("relu"))._forward(x32) is None
    frozen = BatchNormalization(trainable=False)
    assert BatchNormActivation(frozen, Activation("relu"))._forward(x32) is None
    assert BatchNormActivation(BatchNormalization(), Activation("relu"))._forward(x32[:1]) is None  # the layer's own error
    previous = _backend.use_numba(False)
    try:
        assert BatchNormActivation(BatchNormalization(), Activation("relu"))._forward(x32) is None
    finally:
        _backend.use_numba(previous)


def test_bn_activation_forward_fused_rejects_non_finite_input_and_keeps_state(rng):
    from normlab.layers import Activation, BatchNormalization

    bn, act = BatchNormalization(name="bn"), Activation("relu")
    x = rng.standard_normal((8, 3)).astype(np.float32)
    bn._ensure_built(x)
    BatchNormActivation(bn, act)._forward(x)
    before = {k: b.copy() for k, b in bn.buffers.items()}
    x[2, 1] = np.inf
    with pytest.raises(ValueError, match="'bn'.*NaN or inf"):
        BatchNormActivation(bn, act)._forward(x)
    for k, b in bn.buffers.items():
        np.testing.assert_array_equal(b, before[k])


# ------------------------------------- float32 exp and sigmoid for numba kernels
def _ulps(approx, exact):
    """|approx - exact| in units of the float32 spacing at ``exact``."""
    spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
    return np.abs(approx.astype(np.float64) - exact) / spacing


def test_expf_sigmoidf_accuracy():
    from normlab.kernels import _expf_numba as E

    x = np.concatenate([np.linspace(-100, 100, 400_001), np.geomspace(1e-30, 10, 20_001),
                        -np.geomspace(1e-30, 10, 20_001)]).astype(np.float32)
    x64 = x.astype(np.float64)
    out = np.empty_like(x)
    inside = (x > -87) & (x < 88)
    E.exp_array(x, out)
    assert _ulps(out[inside], np.exp(x64[inside])).max() <= 2
    E.sigmoid_array(x, out)
    ref = 1.0 / (1.0 + np.exp(-x64))
    normal = ref > 1e-37  # below, the input clamp leaves an absolute error under 1e-38
    assert _ulps(out[normal], ref[normal]).max() <= 4
    assert np.abs(out - ref).max() < 1e-7


def test_expf_sigmoidf_special_values():
    from normlab.kernels import _expf_numba as E

    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30], np.float32)
    out = np.empty_like(x)
    E.sigmoid_array(x, out)
    assert np.isnan(out[0]) and out[1] == 1.0 and 0 <= out[2] < 1e-37 and out[3] == out[4] == 0.5
    E.exp_array(np.array([np.nan, 0.0], np.float32), out[:2])
    assert np.isnan(out[0]) and out[1] == 1.0


def test_sigmoid_activation_numba_path_matches_numpy(rng):
    z = (rng.standard_normal((50, 30)) * 8).astype(np.float32)
    fused, plain = both_paths(activations.sigmoid, z)
    assert fused.dtype == np.float32
    np.testing.assert_allclose(fused, plain, rtol=0, atol=1.2e-7)
    z64 = z.astype(np.float64)  # float64 keeps NumPy's tanh form on both paths
    np.testing.assert_array_equal(*both_paths(activations.sigmoid, z64))


# ------------------------------------- softmax and sparse cross-entropy of small outputs
@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("shape", [(60, 10), (1, 3), (7, 1), (5, 40)])
def test_small_softmax_and_sparse_ce_match_numpy(shape, dtype, rtol):
    from normlab.kernels import _softmax_numba, losses

    rng = np.random.default_rng(sum(shape))
    z = (rng.standard_normal(shape) * 20).astype(dtype)  # large logits: the shift matters
    z[0, 0] = 80.0  # exp would overflow without the shift
    labels = rng.integers(0, shape[1], shape[0]).astype(np.intp)
    assert activations.small_rows(z)
    p_nb, p_np = both_paths(activations.softmax, z)
    (v_nb, g_nb), (v_np, g_np) = both_paths(losses.sparse_categorical_crossentropy_logits_value_and_grad, labels, z)
    assert p_nb.dtype == g_nb.dtype == dtype
    np.testing.assert_allclose(p_nb, p_np, rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(p_nb.sum(axis=1), 1.0, rtol=shape[1] * rtol)
    np.testing.assert_allclose(g_nb, g_np, rtol=rtol, atol=rtol / shape[0])
    assert v_nb == pytest.approx(v_np, rel=rtol * 10)
    # the kernel refuses a label out of range instead of reading outside z
    bad = labels.copy()
    bad[-1] = shape[1]
    assert np.isnan(_softmax_numba.sparse_ce_logits(bad, z, np.empty_like(z)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_output_layer_kernel_equals_softmax_and_sparse_ce_bit_for_bit(dtype, with_bias):
    from normlab.kernels import _softmax_numba

    rng = np.random.default_rng(7)
    z = (rng.standard_normal((9, 4)) * 10).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype) if with_bias else np.empty(0, dtype)
    labels = rng.integers(0, 4, 9).astype(np.intp)
    biased = z + bias if with_bias else z.copy()
    p_ref, g_ref = np.empty_like(z), np.empty_like(z)
    _softmax_numba.softmax_rows(biased, p_ref)
    v_ref = _softmax_numba.sparse_ce_logits(labels, biased, g_ref)
    out, grad = np.empty_like(z), np.empty_like(z)
    v = _softmax_numba.bias_softmax_sparse_ce(labels, z, bias, out, grad)
    np.testing.assert_array_equal(z, biased)  # the bias is added in place
    np.testing.assert_array_equal(out, p_ref)
    np.testing.assert_array_equal(grad, g_ref)
    assert v == v_ref
    bad = labels.copy()
    bad[3] = -1
    assert np.isnan(_softmax_numba.bias_softmax_sparse_ce(bad, biased.copy(), np.empty(0, dtype), out, grad))


def test_softmax_and_sparse_ce_edge_cases_follow_numpy():
    from normlab import losses

    z = np.array([[np.nan, 1.0, 2.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0], [1.0, 1.0, 1.0]], np.float32)
    with np.errstate(invalid="ignore"):  # NumPy's inf - inf
        p_nb, p_np = both_paths(activations.softmax, z)
    np.testing.assert_array_equal(np.isnan(p_nb), np.isnan(p_np))
    assert np.isnan(p_nb[:2]).all()
    np.testing.assert_allclose(p_nb[2:], p_np[2:], rtol=1e-6)
    # labels out of range still get the loss's clear error on the numba path
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        loss(np.array([0, 3, 1, 2]), np.ones((4, 3), np.float32))


def test_large_outputs_keep_the_vectorized_numpy_softmax():
    from normlab.kernels import _softmax_numba

    k = _softmax_numba.MAX_ROW + 1
    assert not activations.small_rows(np.zeros((_softmax_numba.MAX_SIZE // k + 1, k), np.float32))
    assert activations.small_rows(np.zeros((_softmax_numba.MAX_SIZE // k, k), np.float32))
    # short rows take the kernels at any batch size
    assert activations.small_rows(np.zeros((_softmax_numba.MAX_SIZE, _softmax_numba.MAX_ROW), np.float32))
    assert not activations.small_rows(np.zeros((4, 5), np.float32).T)  # not C-contiguous
    assert not activations.small_rows(np.zeros((4, 5), np.int64))
    assert activations.small_rows(np.zeros((4, 5), np.float32))
