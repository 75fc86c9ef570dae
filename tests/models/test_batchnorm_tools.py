import numpy as np
import pytest

import normlab
from normlab import initializers
from normlab.layers import Activation, BatchNormalization, Dense


def net(seed=0):
    return normlab.Sequential(
        [
            Dense(7, kernel_initializer=initializers.GlorotUniform(seed=seed)),
            BatchNormalization(gamma_initializer=initializers.RandomUniform(0.5, 1.5, seed=1),
                               beta_initializer=initializers.RandomUniform(-1, 1, seed=2)),
            Activation("relu"),
            Dense(5, use_bias=False, kernel_initializer=initializers.GlorotUniform(seed=seed + 1)),
            BatchNormalization(center=False),
            Dense(3, activation="softmax"),
        ]
    )


def test_population_statistics_equal_var_ddof1(rng):
    x = rng.standard_normal((103, 4)) * 3 + 1
    model = net()
    model(x[:8], training=True)
    stats = normlab.recompute_batchnorm_statistics(model, x, batch_size=10)
    bn1, bn2 = model.layers[1], model.layers[4]
    h1 = model.layers[0](x)
    np.testing.assert_allclose(bn1.buffers["moving_mean"], h1.mean(0), rtol=1e-10)
    np.testing.assert_allclose(bn1.buffers["moving_variance"], h1.var(0, ddof=1), rtol=1e-10)
    # the second layer sees activations computed with the first layer's new statistics
    h2 = model.layers[3](model.layers[2](bn1(h1)))
    np.testing.assert_allclose(bn2.buffers["moving_variance"], h2.var(0, ddof=1), rtol=1e-10)
    assert set(stats) == {bn1.name, bn2.name}
    # the result does not depend on the batch size
    before = [b.copy() for l in (bn1, bn2) for b in l.buffers.values()]
    normlab.recompute_batchnorm_statistics(model, x, batch_size=1000)
    for a, b in zip(before, [b for l in (bn1, bn2) for b in l.buffers.values()]):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_population_statistics_for_images(rng):
    x = rng.standard_normal((6, 3, 3, 2)) + 5
    model = normlab.Sequential([BatchNormalization()])
    model(x)
    normlab.recompute_batchnorm_statistics(model, x, batch_size=4)
    flat = x.reshape(-1, 2)
    np.testing.assert_allclose(model.layers[0].buffers["moving_variance"], flat.var(0, ddof=1), rtol=1e-10)


def test_fold_batchnorm_same_predictions(rng):
    x = rng.standard_normal((50, 4)).astype(np.float32)
    model = net()
    for _ in range(3):
        model(x, training=True)  # moving statistics away from their initial values
    folded = normlab.fold_batchnorm(model)
    assert folded.folded_pairs == 2
    # the Activation after the first pair became the folded Dense's activation
    assert [type(l).__name__ for l in folded.layers] == ["Dense", "Dense", "Dense"]
    assert folded.layers[0].activation == model.layers[2].activation
    np.testing.assert_allclose(folded.predict(x), model.predict(x), rtol=1e-5, atol=1e-5)
    # the original is untouched and independent
    model.layers[0].params["kernel"] += 1
    assert not np.allclose(folded.predict(x), model.predict(x))


def test_fold_skips_dense_with_activation(rng):
    model = normlab.Sequential([Dense(3, activation="relu"), BatchNormalization()])
    model(rng.standard_normal((4, 2)))
    folded = normlab.fold_batchnorm(model)
    assert folded.folded_pairs == 0 and len(folded.layers) == 2


def test_tools_need_a_built_model():
    with pytest.raises(ValueError, match="built"):
        normlab.fold_batchnorm(net())
    with pytest.raises(ValueError, match="built"):
        normlab.recompute_batchnorm_statistics(net(), np.ones((3, 4)))


def test_scale_invariance_of_batch_norm(rng):
    """BN(Wu) = BN((aW)u), dBN/du unchanged, and dL/d(aW) = dL/dW / a (001_6de9842281beb0b3.txt)."""
    u = rng.standard_normal((32, 6))
    dy = rng.standard_normal((32, 4))
    out = {}
    for a in (1.0, 7.5):
        dense = Dense(4, use_bias=False, kernel_initializer=initializers.GlorotUniform(seed=3), dtype="float64")
        bn = BatchNormalization(epsilon=1e-12, dtype="float64")
        dense.build_from_shape((None, 6))
        dense.params["kernel"] *= a
        y = bn(dense(u, training=True), training=True)
        du = dense.backward(bn.backward(dy))
        out[a] = (y, du, dense.grads["kernel"].copy())
    np.testing.assert_allclose(out[7.5][0], out[1.0][0], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out[7.5][1], out[1.0][1], rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(out[7.5][2], out[1.0][2] / 7.5, rtol=1e-7, atol=1e-12)


def test_fold_conv_batchnorm_same_predictions(rng):
    from normlab.layers import Conv1D, Conv2D, GlobalAveragePooling1D, GlobalAveragePooling2D

    x = rng.standard_normal((6, 8, 8, 3)).astype(np.float32)
    model = normlab.Sequential(
        [
            Conv2D(5, 3, padding="same", use_bias=False),
            BatchNormalization(gamma_initializer=initializers.RandomUniform(0.5, 1.5, seed=1),
                               beta_initializer=initializers.RandomUniform(-1, 1, seed=2)),
            Activation("relu"),
            Conv2D(4, 3, strides=2),
            BatchNormalization(),
            GlobalAveragePooling2D(),
            Dense(3, activation="softmax"),
        ]
    )
    for _ in range(3):
        model(x, training=True)
    folded = normlab.fold_batchnorm(model)
    assert folded.folded_pairs == 2
    assert [type(l).__name__ for l in folded.layers] == ["Conv2D", "Conv2D", "GlobalAveragePooling2D", "Dense"]
    assert [l.activation for l in folded.layers[:2]] == ["relu", None]
    np.testing.assert_allclose(folded.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)
    x1 = rng.standard_normal((5, 9, 2))
    m1 = normlab.Sequential([Conv1D(4, 3), BatchNormalization(), GlobalAveragePooling1D()])
    m1(x1, training=True)
    np.testing.assert_allclose(normlab.fold_batchnorm(m1).predict(x1), m1.predict(x1), rtol=1e-10)


def test_population_statistics_overflow_changes_no_layer(rng):
    """float32 activations near 1e20: the variance (1e40) does not fit a float32 buffer. The error says
    "overflow" and no layer's statistics change, not even those of the layers before the failing one."""
    model = normlab.Sequential([BatchNormalization(), Dense(3), BatchNormalization()])
    x = (1e20 * rng.standard_normal((40, 4))).astype(np.float32)
    model(x[:4] * 1e-20)
    model.layers[1].params["kernel"][...] = 1e20  # the first layer's output is O(1), the second's O(1e20)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="overflow"):
        normlab.recompute_batchnorm_statistics(model, x * 1e-20, batch_size=16)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    with pytest.raises(ValueError, match="overflow"):
        normlab.recompute_batchnorm_statistics(model, x)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_population_statistics_of_extreme_and_constant_features(rng):
    """float64 values of 1e150 (squares overflow, the variance does not) and a constant feature."""
    x = 1e150 * rng.standard_normal((30, 3))
    x[:, 1] = 0.1  # a float64 sum of 30 copies of 0.1 is not 3.0 exactly
    model = normlab.Sequential([BatchNormalization(dtype="float64")])
    model(x)
    normlab.recompute_batchnorm_statistics(model, x, batch_size=7)
    bn = model.layers[0]
    np.testing.assert_allclose(bn.buffers["moving_mean"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(bn.buffers["moving_variance"], (x / 1e150).var(0, ddof=1) * 1e300, rtol=1e-12)
    assert bn.buffers["moving_mean"][1] == 0.1 and bn.buffers["moving_variance"][1] == 0.0
    assert (bn(x)[:, 1] == 0.0).all()


def _residual(seed=0, dtype="float32"):
    """A functional net: conv -> BN -> relu, a residual branch whose conv's output BN is not its only reader."""
    from normlab.layers import Add, Conv2D, GlobalAveragePooling2D

    init = lambda s: initializers.GlorotUniform(seed=seed + s)  # noqa: E731
    bn = lambda s: BatchNormalization(  # noqa: E731
        gamma_initializer=initializers.RandomUniform(0.5, 1.5, seed=seed + 10 + s),
        beta_initializer=initializers.RandomUniform(-1, 1, seed=seed + 20 + s))
    inp = normlab.Input((6, 6, 3), dtype=dtype)
    a = Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer=init(1), dtype=dtype)(inp)
    h = Activation("relu")(bn(1)(a))
    b = Conv2D(4, 3, padding="same", kernel_initializer=init(2))(h)
    h = Add()([bn(2)(b), h])
    c = Conv2D(4, 1, kernel_initializer=init(3))(h)
    h = Add()([bn(3)(c), c])  # c is read twice: its BN stays a layer
    out = Dense(3, activation="softmax", kernel_initializer=init(4))(GlobalAveragePooling2D()(h))
    return normlab.Model(inp, out)


def test_fold_batchnorm_functional_model(rng):
    """fold_batchnorm on a graph: pairs whose BN is the conv's only reader fold; predictions agree."""
    x = rng.standard_normal((9, 6, 6, 3)).astype(np.float32)
    model = _residual()
    for _ in range(3):
        model(x, training=True)
    folded = normlab.fold_batchnorm(model)
    assert isinstance(folded, normlab.Model)
    assert folded.folded_pairs == 2
    kinds = [type(l).__name__ for l in folded.layers]
    assert kinds.count("BatchNormalization") == 1 and kinds.count("Conv2D") == 3
    np.testing.assert_allclose(folded.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)
    # the original keeps its own weights: folding copies
    assert sum(isinstance(l, BatchNormalization) for l in model.layers) == 3


def test_recompute_batchnorm_statistics_functional_equals_layerwise(rng):
    """On a graph each BN gets the exact moments of its input, computed with the upstream BNs already fixed."""
    x = rng.standard_normal((40, 6, 6, 3)) * 2 + 0.5
    model = _residual(dtype="float64")
    model(x[:8], training=True)
    stats = normlab.recompute_batchnorm_statistics(model, x, batch_size=7)
    assert len(stats) == 3
    # replay the graph in inference mode with the new statistics and check each BN's input moments
    program, _ = model._program()
    values = [x]
    for layer, reads in program:
        args = [values[i] for i in reads]
        if isinstance(layer, BatchNormalization):
            h = args[0]
            np.testing.assert_allclose(layer.buffers["moving_mean"], h.mean(axis=(0, 1, 2)), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(layer.buffers["moving_variance"], h.var(axis=(0, 1, 2), ddof=1), rtol=1e-10)
        values.append(layer(args if layer.multi_input else args[0], training=False))


def test_fold_batchnorm_epsilon_zero_with_a_zero_moving_variance(rng):
    """epsilon=0 meets a zero moving variance: the BN outputs beta there, and so must the folded layer."""
    model = normlab.Sequential([Dense(4), BatchNormalization(epsilon=0.0)])
    x = rng.standard_normal((6, 3)).astype(np.float32)
    model(x, training=True)
    bn = model.layers[1]
    bn.buffers["moving_variance"][2] = 0.0
    bn.params["beta"][...] = [0.5, -1.0, 2.0, 0.25]
    folded = normlab.fold_batchnorm(model)
    got = folded.predict(x, verbose=0)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[:, 2], np.float32(2.0))
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_fold_batchnorm_inside_a_nested_model(rng):
    """A Sequential holding a model as a layer folds through it (the graph path): same predictions."""
    base = normlab.Sequential([normlab.Input((4,)), Dense(3, use_bias=False), BatchNormalization(), Activation("relu")])
    model = normlab.Sequential([base, Dense(2)])
    x = rng.standard_normal((16, 4)).astype(np.float32)
    for _ in range(3):
        model(x, training=True)
    folded = normlab.fold_batchnorm(model)
    assert folded.folded_pairs == 1
    assert not any(isinstance(l, BatchNormalization) for l in folded.layers)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
