"""The preallocated training pass (normlab.models._train_plan) equals the layer-by-layer pass bit for bit."""

import numpy as np
import pytest

import normlab
from normlab import optimizers
from normlab.kernels import _backend
from normlab.layers import Activation, BatchNormalization, Conv2D, Dense, Dropout, Flatten

pytestmark = pytest.mark.skipif(not _backend.NUMBA_AVAILABLE, reason="the plan needs the numba kernels")


def bn_block(units, act, dtype, **bn_kw):
    return [Dense(units, use_bias=False, dtype=dtype), BatchNormalization(dtype=dtype, **bn_kw),
            Activation(act, dtype=dtype)]


# name -> (layers factory, loss, output kind)
ARCHS = {
    "bn_sigmoid": (lambda d: bn_block(12, "sigmoid", d) + bn_block(8, "sigmoid", d)
                   + [Dense(3, activation="softmax", dtype=d)], "sparse_categorical_crossentropy", "sparse"),
    "bn_relu_tanh_elu": (lambda d: bn_block(12, "relu", d) + bn_block(8, "tanh", d) + bn_block(6, "elu", d)
                         + [Dense(3, activation="softmax", dtype=d)], "sparse_categorical_crossentropy", "sparse"),
    "bn_first_and_bare_bn": (lambda d: [BatchNormalization(dtype=d), Activation("relu", dtype=d),
                                        Dense(10, activation="tanh", dtype=d),
                                        BatchNormalization(center=False, dtype=d),
                                        Dense(7, dtype=d), BatchNormalization(scale=False, dtype=d),
                                        Activation("sigmoid", dtype=d), Dense(3, activation="softmax", dtype=d)],
                             "categorical_crossentropy", "onehot"),
    "plain_mse": (lambda d: [Dense(10, activation="relu", dtype=d), Dense(6, activation="sigmoid", dtype=d),
                             Activation("tanh", dtype=d), Dense(2, dtype=d)], "mse", "regression"),
    "binary_logits": (lambda d: bn_block(9, "relu", d) + [Dense(1, activation="sigmoid", dtype=d)],
                      "binary_crossentropy", "binary"),
}


def make_model(arch, dtype, optimizer, use_plan):
    layers, loss, _ = ARCHS[arch]
    model = normlab.Sequential(layers(np.dtype(dtype).name))
    model._use_train_plan = use_plan
    model.build((None, 5), seed=3)
    model.compile(optimizer=optimizer(), loss=loss)
    return model


def targets(kind, n, rng):
    if kind == "sparse":
        return rng.integers(0, 3, n)
    if kind == "onehot":
        return np.eye(3)[rng.integers(0, 3, n)]
    if kind == "binary":
        return rng.integers(0, 2, (n, 1)).astype(float)
    return rng.standard_normal((n, 2))


def train(arch, dtype, optimizer, use_plan, steps=4, batch=16):
    model = make_model(arch, dtype, optimizer, use_plan)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        x = (rng.standard_normal((batch, 5)) * 2 + 0.5).astype(dtype)
        losses.append(model.train_on_batch(x, targets(ARCHS[arch][2], batch, rng)))
    return model, losses


def state(model):
    return model.get_weights() + [g.copy() for l in model.layers for g in l.grads.values()]


OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(learning_rate=0.1),
    "sgd_momentum": lambda: optimizers.SGD(learning_rate=0.1, momentum=0.9),
    "adam": lambda: optimizers.Adam(learning_rate=0.01),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_plan_equals_layer_by_layer_bit_for_bit(arch, dtype, optimizer):
    planned, losses_p = train(arch, dtype, OPTIMIZERS[optimizer], True)
    layered, losses_l = train(arch, dtype, OPTIMIZERS[optimizer], False)
    assert any(p is not None for p in planned._train_plans.values())  # the plan ran
    assert not getattr(layered, "_train_plans", {}) or all(p is None for p in layered._train_plans.values())
    assert losses_p == losses_l
    for a, b in zip(state(planned), state(layered)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # what the layers keep for their backward pass and for diagnostics matches too
    for lp, ll in zip(planned.layers, layered.layers):
        if isinstance(ll._cache, tuple) and hasattr(ll._cache, "_fields"):
            for f in ll._cache._fields:
                np.testing.assert_array_equal(getattr(lp._cache, f), getattr(ll._cache, f))
        assert getattr(lp, "_out_shape", None) == getattr(ll, "_out_shape", None)


def test_fit_with_a_last_partial_batch_uses_one_plan_per_shape_and_matches():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((70, 5)).astype(np.float32)
    y = rng.integers(0, 3, 70)
    hist = {}
    for use in (True, False):
        model = make_model("bn_sigmoid", np.float32, OPTIMIZERS["adam"], use)
        h = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        hist[use] = (h.history["loss"], [w.copy() for w in model.get_weights()])
        if use:
            assert sorted(k[0] for k, p in model._train_plans.items() if p is not None) == [(6, 5), (32, 5)]
            # switching the numba kernels off takes the layers' NumPy path from the next step on
            previous = _backend.use_numba(False)
            try:
                model.train_on_batch(x[:32], y[:32])
                assert model._active_plan is None
            finally:
                _backend.use_numba(previous)
    assert hist[True][0] == hist[False][0]
    for a, b in zip(hist[True][1], hist[False][1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("last", [[], [Activation("linear")], [BatchNormalization()]])
def test_the_output_is_the_callers_own_array(last):
    model = normlab.Sequential([Dense(4), Dense(3)] + last)
    model.build((None, 5), seed=0)
    model.compile(optimizer="sgd", loss="mse")
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    model._prepare_training()
    first = model._forward(x, True)
    assert model._active_plan is not None
    kept = first.copy()
    model._forward(x * 2 + 1, True)
    np.testing.assert_array_equal(first, kept)  # not overwritten by the next pass


def test_plan_declines_what_it_does_not_cover():
    from normlab.models._train_plan import TrainPlan

    x = np.ones((8, 5), np.float32)

    def plan_for(layers, x=x, compile_loss="mse"):
        model = normlab.Sequential(layers)
        model.build((None,) + x.shape[1:], seed=0)
        model.compile(optimizer="sgd", loss=compile_loss)
        model._prepare_training()
        return TrainPlan.for_model(model, x)

    assert plan_for([Dense(3), BatchNormalization(), Activation("relu"), Dense(2)]) is not None
    assert plan_for([Dense(3), Dropout(0.5), Dense(2)]) is None
    assert plan_for([Dense(3), BatchNormalization(renorm=True), Dense(2)]) is None
    assert plan_for([Dense(3), BatchNormalization(virtual_batch_size=4), Dense(2)]) is None
    frozen = Dense(3)
    frozen.trainable = False
    assert plan_for([frozen, Dense(2)]) is None
    assert plan_for([Dense(3), Dense(2)], x=np.ones((1, 5), np.float32)) is None  # a batch of one
    img = np.ones((2, 6, 6, 1), np.float32)
    assert plan_for([Conv2D(2, 3), Flatten(), Dense(2)], x=img) is None
    # a loss through the logits of a layer other than Dense
    assert plan_for([Dense(3), BatchNormalization(), Activation("softmax")],
                    compile_loss="sparse_categorical_crossentropy") is None
    previous = _backend.use_numba(False)
    try:
        assert plan_for([Dense(3), Dense(2)]) is None
    finally:
        _backend.use_numba(previous)


def test_a_replaced_parameter_array_rebuilds_the_plan():
    planned, _ = train("bn_sigmoid", np.float32, OPTIMIZERS["adam"], True, steps=2)
    layered, _ = train("bn_sigmoid", np.float32, OPTIMIZERS["adam"], False, steps=2)
    key = ((16, 5), np.dtype(np.float32).str, True)
    old_plan = planned._train_plans[key]
    for m in (planned, layered):
        bn = m.layers[1]
        bn.buffers["moving_mean"] = bn.buffers["moving_mean"].copy()  # a new array object
    x = np.linspace(-1, 1, 80, dtype=np.float32).reshape(16, 5)
    y = np.arange(16) % 3
    planned.train_on_batch(x, y)
    layered.train_on_batch(x, y)
    assert planned._train_plans[key] is not old_plan
    for a, b in zip(state(planned), state(layered)):
        np.testing.assert_array_equal(a, b)


def test_non_finite_activations_raise_and_leave_the_model_unchanged():
    model = make_model("bn_sigmoid", np.float32, OPTIMIZERS["adam"], True)
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.standard_normal((16, 5)).astype(np.float32), rng.integers(0, 3, 16))
    before = [w.copy() for w in model.get_weights()]
    x = np.full((16, 5), 3e38, np.float32)  # finite, but the first matrix product overflows
    with pytest.raises(ValueError, match="BatchNormalization.*NaN or inf"), np.errstate(over="ignore"):
        model.train_on_batch(x, rng.integers(0, 3, 16))
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_softmax_output_with_sparse_cross_entropy_takes_the_one_kernel_step():
    from normlab import losses
    from normlab.kernels import _softmax_numba

    def plan_of(arch="bn_sigmoid", batch=16, loss=None):
        model = make_model(arch, np.float32, OPTIMIZERS["sgd"], True)
        if loss is not None:
            model.compile(optimizer="sgd", loss=loss)
        rng = np.random.default_rng(0)
        model.train_on_batch(rng.standard_normal((batch, 5)).astype(np.float32), targets(ARCHS[arch][2], batch, rng))
        return model._active_plan

    assert plan_of().sparse_ce
    assert not plan_of("bn_first_and_bare_bn").sparse_ce  # categorical cross-entropy
    assert not plan_of(loss=losses.SparseCategoricalCrossentropy(label_smoothing=0.1)).sparse_ce
    # beyond the size where the loss leaves the numba kernel for NumPy's vectorized calls
    k = _softmax_numba.MAX_ROW + 1
    wide = normlab.Sequential([Dense(4, use_bias=False), BatchNormalization(), Activation("relu"),
                               Dense(k, activation="softmax")])
    wide.build((None, 5), seed=0)
    wide.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    for batch, expected in ((_softmax_numba.MAX_SIZE // k, True), (_softmax_numba.MAX_SIZE // k + 1, False)):
        wide.train_on_batch(rng.standard_normal((batch, 5)).astype(np.float32), rng.integers(0, k, batch))
        assert wide._active_plan.sparse_ce is expected


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
def test_nan_logits_take_the_general_loss_path_as_the_layers_do(on_nonfinite):
    results = {}
    for use in (True, False):
        model = make_model("bn_sigmoid", np.float32, lambda: optimizers.SGD(0.1, on_nonfinite=on_nonfinite), use)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((16, 5)).astype(np.float32)
        y = rng.integers(0, 3, 16)
        model.train_on_batch(x, y)
        model.layers[-1].params["bias"][1] = np.nan
        before = [w.copy() for w in model.get_weights()]
        if on_nonfinite == "raise":
            with pytest.raises(FloatingPointError, match="NaN or inf"):
                model.train_on_batch(x, y)
            for a, b in zip(before, model.get_weights()):  # moving statistics included
                np.testing.assert_array_equal(a, b)
            results[use] = before
        else:
            loss = model.train_on_batch(x, y)
            assert np.isnan(loss) and model.optimizer.skipped_steps == 1
            results[use] = [w.copy() for w in model.get_weights()] + list(model.layers[-1]._cache)
        assert (model._active_plan is not None) == use
    for a, b in zip(results[True], results[False]):
        np.testing.assert_array_equal(a, b)


def test_the_optimizer_checks_the_flat_buffers_again_after_a_rebuild():
    model, _ = train("bn_sigmoid", np.float32, OPTIMIZERS["sgd"], True, steps=2)
    x = np.linspace(-1, 1, 80, dtype=np.float32).reshape(16, 5)
    y = np.arange(16) % 3
    # rebuilt for other parameters: the model's next step is refused, not applied to the wrong slots
    model.optimizer.build([np.zeros(3, np.float32)])
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"array of shape \(3,\)"):
        model.train_on_batch(x, y)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a new optimizer through compile() is checked and then steps as before
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    assert model.optimizer.iterations == 2


def test_a_failed_step_restores_exactly_the_moving_statistics_it_updated():
    # bn_sigmoid: Dense, BN, sigmoid, Dense, BN, sigmoid, Dense(softmax)
    model = make_model("bn_sigmoid", np.float32, OPTIMIZERS["sgd"], True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    model.train_on_batch(x, y)
    second = model.layers[3].params["kernel"]
    kept = second.copy()
    # the second batch norm fails (its input overflows) after the first one updated its statistics
    before = [w.copy() for w in model.get_weights()]
    second[...] = 3e38
    with pytest.raises(ValueError, match="NaN or inf"), np.errstate(over="ignore", invalid="ignore"):
        model.train_on_batch(x, y)
    second[...] = kept
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.train_on_batch(x, y)
    # now the first one fails: the second saved its statistics in an earlier step, which must not come back
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="NaN or inf"), np.errstate(over="ignore", invalid="ignore"):
        model.train_on_batch(np.full((16, 5), 3e38, np.float32), y)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model._active_plan is not None
