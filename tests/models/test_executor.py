"""The one training step (normlab.models.executor): fused layers equal the unfused ones bit for bit,
Sequential equals the same functional Model, and a failed step leaves the model as it was."""

import numpy as np
import pytest

import normlab
from normlab import optimizers
from normlab.kernels import _backend
from normlab.layers import Activation, Add, BatchNormalization, Dense, Dropout, GaussianNoise
from normlab.layers.fused import BatchNormActivation
from normlab.models._dense_bn_node import DenseBatchNormActivation

# every test runs on both paths: the rewrite must not depend on numba
pytestmark = pytest.mark.usefixtures("kernel_path")


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


def as_functional(layers):
    inp = normlab.Input((5,))
    h = inp
    for layer in layers:
        h = layer(h)
    return normlab.Model(inp, h)


def make_model(arch, dtype, optimizer, fuse, functional=False):
    layers, loss, _ = ARCHS[arch]
    layers = layers(np.dtype(dtype).name)
    model = normlab.Sequential(layers)
    model.build((None, 5), seed=3)
    if functional:  # the same layers, fresh, with the Sequential's initial weights
        twin = as_functional(ARCHS[arch][0](np.dtype(dtype).name))
        twin.set_weights(model.get_weights())
        model = twin
    model._fuse_layers = fuse
    model.compile(optimizer=optimizer(), loss=loss)
    return model


def fused_nodes(model):
    """The batch norm + activation pairs of the training program (a pair after a bias-free Dense runs inside their node)."""
    layers = [n.layer.pair if isinstance(n.layer, DenseBatchNormActivation) else n.layer for n in model._executor.nodes]
    return [layer for layer in layers if isinstance(layer, BatchNormActivation)]


def targets(kind, n, rng):
    if kind == "sparse":
        return rng.integers(0, 3, n)
    if kind == "onehot":
        return np.eye(3)[rng.integers(0, 3, n)]
    if kind == "binary":
        return rng.integers(0, 2, (n, 1)).astype(float)
    return rng.standard_normal((n, 2))


def train(arch, dtype, optimizer, fuse, steps=4, batch=16, functional=False):
    model = make_model(arch, dtype, optimizer, fuse, functional)
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


def assert_same(a_model, b_model):
    for a, b in zip(state(a_model), state(b_model)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # what the layers keep for their backward pass and for diagnostics matches too
    for la, lb in zip(a_model.layers, b_model.layers):
        if isinstance(lb._cache, tuple) and hasattr(lb._cache, "_fields"):
            for f in lb._cache._fields:
                np.testing.assert_array_equal(getattr(la._cache, f), getattr(lb._cache, f))
        assert getattr(la, "_out_shape", None) == getattr(lb, "_out_shape", None)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_fused_layers_equal_the_unfused_ones_bit_for_bit(arch, dtype, optimizer):
    fused, losses_f = train(arch, dtype, OPTIMIZERS[optimizer], True)
    plain, losses_p = train(arch, dtype, OPTIMIZERS[optimizer], False)
    has_pair = arch in ("bn_sigmoid", "bn_relu_tanh_elu", "bn_first_and_bare_bn", "binary_logits")
    assert bool(fused_nodes(fused)) == has_pair
    assert not fused_nodes(plain)
    assert losses_f == losses_p
    assert_same(fused, plain)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_a_functional_model_trains_as_the_same_sequential_bit_for_bit(arch, dtype):
    seq, losses_s = train(arch, dtype, OPTIMIZERS["adam"], True)
    fun, losses_f = train(arch, dtype, OPTIMIZERS["adam"], True, functional=True)
    assert len(fused_nodes(seq)) == len(fused_nodes(fun))
    assert losses_s == losses_f
    assert_same(seq, fun)


def test_fit_with_a_last_partial_batch_matches(kernel_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((70, 5)).astype(np.float32)
    y = rng.integers(0, 3, 70)
    hist = {}
    for fuse in (True, False):
        model = make_model("bn_sigmoid", np.float32, OPTIMIZERS["adam"], fuse)
        h = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        hist[fuse] = (h.history["loss"], [w.copy() for w in model.get_weights()])
        if fuse and kernel_path == "numba":
            # switching the numba kernels off takes the NumPy path from the next step on
            previous = _backend.use_numba(False)
            try:
                model.train_on_batch(x[:32], y[:32])
                assert model.layers[1]._cache[0] == "train"
            finally:
                _backend.use_numba(previous)
    assert hist[True][0] == hist[False][0]
    for a, b in zip(hist[True][1], hist[False][1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("last", [[], [Activation("linear")], [BatchNormalization()],
                                  [BatchNormalization(), Activation("relu")]])
def test_the_output_is_the_callers_own_array(last):
    model = normlab.Sequential([Dense(4), Dense(3)] + last)
    model.build((None, 5), seed=0)
    model.compile(optimizer="sgd", loss="mse")
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    model._prepare_training()
    first = model._forward(x, True)
    kept = first.copy()
    model._forward(x * 2 + 1, True)
    np.testing.assert_array_equal(first, kept)  # not overwritten by the next pass
    out = model.predict(x)
    kept = out.copy()
    model.train_on_batch(x * 3, np.ones((4, 3)))
    np.testing.assert_array_equal(out, kept)


def test_which_pairs_the_rewrite_fuses():
    def fused_names(model, loss="mse"):
        if not model.built:
            model.build((None, 5), seed=0)
        model.compile(optimizer="sgd", loss=loss)
        model._prepare_training()
        return [n.layer.name for n in model._executor.nodes if isinstance(n.layer, BatchNormActivation)]

    bn, act = BatchNormalization(name="bn"), Activation("relu", name="act")
    assert fused_names(normlab.Sequential([Dense(3), bn, act, Dense(2)])) == ["bn+act"]
    # batch norm then Dense, or an activation then batch norm: nothing to fuse
    assert fused_names(normlab.Sequential([Dense(3), BatchNormalization(), Dense(2)])) == []
    assert fused_names(normlab.Sequential([Dense(3), Activation("relu"), BatchNormalization(), Dense(2)])) == []
    # the pair at the output stays apart (the output is the caller's own array)
    assert fused_names(normlab.Sequential([Dense(3), BatchNormalization(), Activation("sigmoid")])) == []
    # a batch norm whose output also feeds another layer is not fused away
    inp = normlab.Input((5,))
    h = Dense(4)(inp)
    b = BatchNormalization()(h)
    out = Dense(2)(Add()([Activation("relu")(b), b]))
    assert fused_names(normlab.Model(inp, out)) == []
    # in a graph the pair fuses wherever the activation is its batch norm's only consumer
    inp = normlab.Input((5,))
    h = Dense(4)(inp)
    a = Activation("tanh", name="t")(BatchNormalization(name="b")(h))
    out = Dense(2)(Add()([a, Dense(4)(inp)]))
    assert fused_names(normlab.Model(inp, out)) == ["b+t"]
    # the rewrite never shows in the model's own layers
    model = normlab.Sequential([Dense(3), BatchNormalization(), Activation("relu"), Dense(2)])
    fused_names(model)
    assert [type(l).__name__ for l in model.layers] == ["Dense", "BatchNormalization", "Activation", "Dense"]


def test_a_replaced_parameter_array_is_used_from_the_next_step():
    fused, _ = train("bn_sigmoid", np.float32, OPTIMIZERS["adam"], True, steps=2)
    plain, _ = train("bn_sigmoid", np.float32, OPTIMIZERS["adam"], False, steps=2)
    for m in (fused, plain):
        bn = m.layers[1]
        bn.buffers["moving_mean"] = bn.buffers["moving_mean"].copy() + 1  # a new array object
    x = np.linspace(-1, 1, 80, dtype=np.float32).reshape(16, 5)
    y = np.arange(16) % 3
    fused.train_on_batch(x, y)
    plain.train_on_batch(x, y)
    for a, b in zip(state(fused), state(plain)):
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


def test_a_softmax_output_with_sparse_cross_entropy_takes_the_one_kernel_step(kernel_path, monkeypatch):
    from normlab import losses
    _softmax_numba = pytest.importorskip("normlab.kernels._softmax_numba")  # numba: the fast extra

    taken = []
    original = Dense._train_forward_sparse_ce

    def spy(self, x, labels):
        res = original(self, x, labels)
        taken.append(res is not None)
        return res

    monkeypatch.setattr(Dense, "_train_forward_sparse_ce", spy)

    def step(arch="bn_sigmoid", batch=16, loss=None):
        taken.clear()
        model = make_model(arch, np.float32, OPTIMIZERS["sgd"], True)
        if loss is not None:
            model.compile(optimizer="sgd", loss=loss)
        rng = np.random.default_rng(0)
        model.train_on_batch(rng.standard_normal((batch, 5)).astype(np.float32), targets(ARCHS[arch][2], batch, rng))
        return list(taken)

    numba = kernel_path == "numba"
    assert step() == [numba]  # without numba the kernel declines and the general loss runs
    assert step("bn_first_and_bare_bn") == []  # categorical cross-entropy
    assert step(loss=losses.SparseCategoricalCrossentropy(label_smoothing=0.1)) == []
    if not numba:
        return
    # beyond the size where the loss leaves the numba kernel for NumPy's vectorized calls
    k = _softmax_numba.MAX_ROW + 1
    wide = normlab.Sequential([Dense(4, use_bias=False), BatchNormalization(), Activation("relu"),
                               Dense(k, activation="softmax")])
    wide.build((None, 5), seed=0)
    wide.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    for batch, expected in ((_softmax_numba.MAX_SIZE // k, True), (_softmax_numba.MAX_SIZE // k + 1, False)):
        taken.clear()
        wide.train_on_batch(rng.standard_normal((batch, 5)).astype(np.float32), rng.integers(0, k, batch))
        assert taken == [expected]


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
def test_nan_logits_take_the_general_loss_path_as_the_layers_do(on_nonfinite):
    results = {}
    for fuse in (True, False):
        model = make_model("bn_sigmoid", np.float32, lambda: optimizers.SGD(0.1, on_nonfinite=on_nonfinite), fuse)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((16, 5)).astype(np.float32)
        y = rng.integers(0, 3, 16)
        model.train_on_batch(x, y)
        model.layers[-1].params["bias"][1] = np.nan
        before = [w.copy() for w in model.get_weights()]
        if on_nonfinite == "raise":
            with pytest.raises(FloatingPointError, match="NaN or inf"), np.errstate(invalid="ignore"):
                model.train_on_batch(x, y)
            for a, b in zip(before, model.get_weights()):  # moving statistics included
                np.testing.assert_array_equal(a, b)
            results[fuse] = before
        else:
            with np.errstate(invalid="ignore"):
                loss = model.train_on_batch(x, y)
            assert np.isnan(loss) and model.optimizer.skipped_steps == 1
            results[fuse] = [w.copy() for w in model.get_weights()] + list(model.layers[-1]._cache)
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
    assert fused_nodes(model)


@pytest.mark.parametrize("functional", [False, True])
def test_a_failed_step_gives_back_the_noise_layers_generators(functional):
    def build_seq_weights():
        seq = normlab.Sequential([Dense(8, use_bias=False), BatchNormalization(), Activation("relu"),
                                  Dropout(0.3, seed=1), GaussianNoise(0.2, seed=2), Dense(3, activation="softmax")])
        seq.build((None, 5), seed=0)
        return seq.get_weights()

    def build():
        layers = [Dense(8, use_bias=False), BatchNormalization(), Activation("relu"), Dropout(0.3, seed=1),
                  GaussianNoise(0.2, seed=2), Dense(3, activation="softmax")]
        model = as_functional(layers) if functional else normlab.Sequential(layers)
        model.build((None, 5), seed=0)
        if functional:
            model.set_weights(build_seq_weights())
        model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        return model

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    model, twin = build(), build()
    model.train_on_batch(x, y)
    twin.train_on_batch(x, y)
    # the step fails in the optimizer, after every layer drew its noise and updated its statistics
    model.layers[-1].params["kernel"][0, 0] = np.inf
    with pytest.raises(FloatingPointError), np.errstate(invalid="ignore", over="ignore"):
        model.train_on_batch(x, y)
    model.layers[-1].params["kernel"][0, 0] = twin.layers[-1].params["kernel"][0, 0]
    # the same next step as a model that never saw the failed one
    assert model.train_on_batch(x, y) == twin.train_on_batch(x, y)
    for a, b in zip(state(model), state(twin)):
        np.testing.assert_array_equal(a, b)
    for la, lb in zip(model.layers, twin.layers):
        if hasattr(la, "get_rng_state"):
            assert la.get_rng_state() == lb.get_rng_state()


def test_compute_gradients_changes_no_layer_state():
    model = make_model("bn_sigmoid", np.float32, OPTIMIZERS["sgd"], True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    before = [w.copy() for w in model.get_weights()]
    grads = model.compute_gradients(x, y)
    assert grads and all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in grads.values())
    for a, b in zip(before, model.get_weights()):  # moving statistics included
        np.testing.assert_array_equal(a, b)
    # and they are the gradients the step applies: one SGD step moves each parameter by -lr * g
    model.train_on_batch(x, y)
    for (layer, key), g in grads.items():
        idx = [i for i, a in enumerate(before) if a.shape == g.shape]
        assert idx
    np.testing.assert_allclose(model.layers[0].params["kernel"], before[0] - 0.1 * grads[(model.layers[0], "kernel")],
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("functional", [False, True])
@pytest.mark.parametrize("act,loss,kind", [("softmax", "sparse_categorical_crossentropy", "sparse"),
                                           ("softmax", "categorical_crossentropy", "onehot"),
                                           ("sigmoid", "binary_crossentropy", "binary")])
def test_an_activation_layer_as_the_output_takes_the_loss_through_its_logits(act, loss, kind, functional):
    # the loss is differentiated through the Activation's input (its logits), as for a Dense output
    def build():
        units = 1 if kind == "binary" else 3
        def layers():
            d = {"dtype": "float64"}
            return [Dense(6, use_bias=False, **d), BatchNormalization(**d), Activation("relu", **d),
                    Dense(units, **d), Activation(act, **d)]

        model = normlab.Sequential(layers())
        model.build((None, 5), seed=0)
        if functional:
            graph = as_functional(layers())
            graph.set_weights(model.get_weights())
            model = graph
        model.compile(optimizer=optimizers.SGD(0.1), loss=loss)
        return model

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5)).astype(np.float64)
    y = targets(kind, 16, rng)
    model = build()
    grads = model.compute_gradients(x, y)
    assert model._fused  # the loss enters at the Activation's logits
    numeric = normlab.testing.numerical_gradient(
        lambda: model.compute_loss_value(x, y), model.layers[0].params["kernel"])
    np.testing.assert_allclose(grads[(model.layers[0], "kernel")], numeric, rtol=1e-5, atol=1e-7)
    losses = [model.train_on_batch(x, y) for _ in range(3)]
    assert losses[-1] < losses[0]
