"""Conv1D / Conv2D: central differences, PyTorch reference, tiling, errors, config, models, folding."""

import json

import numpy as np
import pytest

from normlab import initializers
from normlab._validation import InvalidParameterError, _as_constraint
from normlab.kernels import _conv_gemm as _gemm
from normlab.kernels import conv as K
from normlab.layers import (
    BatchNormalization,
    Conv1D,
    Conv2D,
    Dense,
    Flatten,
    MaxPooling2D,
    deserialize,
    serialize,
)
from normlab.layers.conv import conv_linear_ops, fold_conv_bn_params
from normlab.models import Sequential
from normlab.testing import check_layer_gradients, check_model_gradients
from normlab.testing.gradcheck import grad_error, numerical_gradient

TOL = 1e-6
RAND_BIAS = initializers.RandomNormal(stddev=1.0, seed=3)


def _conv2d(**kw):
    kw.setdefault("bias_initializer", RAND_BIAS)
    return Conv2D(**kw)


# ------------------------------------------------------------------ central differences
# every combination of stride (1, 2), padding (valid, same), dilation (1, 2) on an odd x even
# image; bias, activation and kernel shape vary along the grid
GRID_2D = [
    {"strides": s, "padding": p, "dilation_rate": d}
    for s in (1, 2) for p in ("valid", "same") for d in (1, 2)
]


@pytest.mark.parametrize("hp", GRID_2D, ids=lambda hp: "-".join(f"{k[0]}{v}" for k, v in hp.items()))
@pytest.mark.parametrize("kernel_size,use_bias,activation", [(3, True, None), ((2, 3), False, "tanh")])
def test_conv2d_gradients_float64(hp, kernel_size, use_bias, activation, rng):
    x = rng.standard_normal((2, 7, 8, 2))
    layer = _conv2d(filters=3, kernel_size=kernel_size, use_bias=use_bias, activation=activation, **hp)
    errs = check_layer_gradients(layer, x)
    assert set(errs) == {"x", "kernel"} | ({"bias"} if use_bias else set())
    assert max(errs.values()) < TOL, errs


@pytest.mark.parametrize("strides,padding,dilation", [
    (1, "valid", 1), (2, "valid", 1), (1, "same", 1), (2, "same", 1), (1, "same", 2),
    (2, "valid", 2), (1, "causal", 1), (1, "causal", 3), (3, "causal", 1),
])
@pytest.mark.parametrize("length", [9, 10])
def test_conv1d_gradients_float64(strides, padding, dilation, length, rng):
    x = rng.standard_normal((2, length, 3))
    layer = Conv1D(2, 3, strides=strides, padding=padding, dilation_rate=dilation, activation="sigmoid",
                   bias_initializer=RAND_BIAS)
    errs = check_layer_gradients(layer, x)
    assert max(errs.values()) < TOL, errs


@pytest.mark.parametrize("tile_bytes", [200, 3000, 8000, 20000, 1 << 30])
@pytest.mark.parametrize("strides,dilation", [(1, 1), (2, 1), (1, 2), ((1, 2), (2, 1))])
def test_tiling_gives_the_same_results(tile_bytes, strides, dilation, rng, monkeypatch):
    """Tiles of a few rows of one image, of several images (with a remainder), or one tile,
    for both formulations (row strips for unit row stride, full patches otherwise)."""
    x = rng.standard_normal((5, 9, 7, 2))
    w = rng.standard_normal((3, 3, 2, 4))
    b = rng.standard_normal(4)
    hp = {"strides": strides, "padding": "same", "dilation": dilation}
    y0, c0 = K.conv2d_forward(x, w, b, **hp)
    dy = rng.standard_normal(y0.shape)
    ref = K.conv2d_backward(dy, c0, w)
    monkeypatch.setattr(_gemm, "TILE_BYTES", tile_bytes)
    y, c = K.conv2d_forward(x, w, b, **hp)
    np.testing.assert_allclose(y, y0, rtol=1e-12, atol=1e-12)
    for a, r in zip(K.conv2d_backward(dy, c, w), ref):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)
    if tile_bytes == 8000:  # the layer with several images per tile (strips) and bands (patches)
        layer = _conv2d(filters=2, kernel_size=3, strides=strides, padding="same", dilation_rate=dilation)
        assert max(check_layer_gradients(layer, x[:3, :6]).values()) < TOL


def test_tiles_cover_every_output_row_once():
    for args in [(5, 9, 42, 8, 2), (5, 9, 42, 8, 0), (3, 40, 100, 4, 4), (1, 7, 1, 8, 0)]:
        for whole in (True, False):
            tiles = _gemm._tiles(*args, whole_images=whole)
            seen = np.zeros((args[0], args[1]), int)
            for n0, n1, p0, p1 in tiles:
                assert n1 - n0 == 1 or (p0, p1) == (0, args[1])
                seen[n0:n1, p0:p1] += 1
            assert (seen == 1).all()


def test_forward_matches_a_naive_loop(rng):
    x = rng.standard_normal((2, 6, 5, 3))
    w = rng.standard_normal((2, 3, 3, 4))
    b = rng.standard_normal(4)
    y, _ = K.conv2d_forward(x, w, b, strides=(2, 1), padding="valid", dilation=(2, 1))
    ho, wo = (6 - 3) // 2 + 1, 5 - 3 + 1
    ref = np.zeros((2, ho, wo, 4))
    for p in range(ho):
        for q in range(wo):
            for i in range(2):
                for j in range(3):
                    ref[:, p, q] += x[:, 2 * p + 2 * i, q + j] @ w[i, j]
    np.testing.assert_allclose(y, ref + b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,k,s,d,expected", [
    (7, 3, 1, 1, (1, 1)), (8, 2, 1, 1, (0, 1)), (7, 3, 2, 1, (1, 1)), (8, 3, 2, 1, (0, 1)),
    (8, 3, 1, 2, (2, 2)), (5, 4, 3, 1, (1, 1)), (6, 4, 1, 1, (1, 2)), (4, 7, 1, 1, (3, 3)),
])
def test_same_padding_follows_tf(n, k, s, d, expected):
    assert K.same_padding(n, k, s, d) == expected
    # the output has ceil(n / s) positions
    assert K.conv_output_length(n, k, s, d, expected) == -(-n // s)


# ------------------------------------------------------------------ PyTorch reference
def _torch_conv2d(torch, x, kernel, bias, strides, dilation, pads, dy):
    """torch on NCHW: explicit layout conversion; 'same' as explicit (possibly asymmetric) F.pad."""
    F = torch.nn.functional
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)  # NHWC -> NCHW
    wt = torch.tensor(kernel.transpose(3, 2, 0, 1).copy(), requires_grad=True)  # (kh, kw, C, F) -> (F, C, kh, kw)
    bt = torch.tensor(bias.copy(), requires_grad=True)
    (pt, pb), (pl, pr) = pads
    y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, bt, stride=strides, dilation=dilation)
    y.backward(torch.tensor(dy.transpose(0, 3, 1, 2).copy()))
    return (
        y.detach().numpy().transpose(0, 2, 3, 1),  # NCHW -> NHWC
        xt.grad.numpy().transpose(0, 2, 3, 1),
        wt.grad.numpy().transpose(2, 3, 1, 0),  # (F, C, kh, kw) -> (kh, kw, C, F)
        bt.grad.numpy(),
    )


def _assert_close32(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))))


@pytest.mark.parametrize("hw,kernel_size,strides,padding,dilation", [
    ((9, 10), 3, 1, "same", 1),
    ((9, 10), 3, 1, "valid", 1),
    ((8, 9), (2, 4), 1, "same", 1),  # even kernel: asymmetric "same" padding
    ((9, 10), 3, 2, "same", 1),  # odd input, stride 2: asymmetric too
    ((10, 11), 3, (2, 3), "valid", 1),
    ((11, 9), 3, 1, "same", 2),
    ((12, 12), (3, 2), 1, "valid", (2, 3)),
    ((12, 13), 3, 2, "same", 2),  # stride and dilation together (Keras refuses, torch does it)
])
def test_conv2d_matches_torch_float32(hw, kernel_size, strides, padding, dilation, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3,) + hw + (4,)).astype(np.float32)
    layer = _conv2d(filters=5, kernel_size=kernel_size, strides=strides, padding=padding, dilation_rate=dilation)
    y = layer(x, training=True)
    assert y.dtype == np.float32
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    pads = layer._cache.conv.geom.pads
    if padding == "same":
        h, w = hw
        kh, kw = layer.kernel_size
        (sh, sw), (dh, dw) = layer.strides, layer.dilation_rate
        assert pads == (K.same_padding(h, kh, sh, dh), K.same_padding(w, kw, sw, dw))
    ry, rdx, rdw, rdb = _torch_conv2d(torch, x, layer.params["kernel"], layer.params["bias"],
                                      layer.strides, layer.dilation_rate, pads, dy)
    _assert_close32(y, ry)
    _assert_close32(dx, rdx)
    _assert_close32(layer.grads["kernel"], rdw)
    _assert_close32(layer.grads["bias"], rdb)


def test_torch_same_padding_string_agrees_when_symmetric(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 7, 7, 3)).astype(np.float32)
    layer = _conv2d(filters=2, kernel_size=3, padding="same", dilation_rate=2)
    y = layer(x)
    wt = torch.tensor(layer.params["kernel"].transpose(3, 2, 0, 1).copy())
    ref = torch.nn.functional.conv2d(torch.tensor(x.transpose(0, 3, 1, 2).copy()), wt,
                                     torch.tensor(layer.params["bias"]), padding="same", dilation=2)
    _assert_close32(y, ref.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("strides,padding,dilation", [(1, "same", 1), (2, "same", 1), (1, "causal", 2), (3, "valid", 1)])
def test_conv1d_matches_torch_float32(strides, padding, dilation, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((3, 12, 4)).astype(np.float32)
    layer = Conv1D(5, 4, strides=strides, padding=padding, dilation_rate=dilation, bias_initializer=RAND_BIAS)
    y = layer(x, training=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    (_, (pl, pr)) = layer._cache.conv.geom.pads
    if padding == "causal":
        assert (pl, pr) == (3 * dilation, 0)
    xt = torch.tensor(x.transpose(0, 2, 1).copy(), requires_grad=True)  # NLC -> NCL
    wt = torch.tensor(layer.params["kernel"].transpose(2, 1, 0).copy(), requires_grad=True)  # (k, C, F) -> (F, C, k)
    bt = torch.tensor(layer.params["bias"].copy(), requires_grad=True)
    ry = F.conv1d(F.pad(xt, (pl, pr)), wt, bt, stride=strides, dilation=dilation)
    ry.backward(torch.tensor(dy.transpose(0, 2, 1).copy()))
    _assert_close32(y, ry.detach().numpy().transpose(0, 2, 1))
    _assert_close32(dx, xt.grad.numpy().transpose(0, 2, 1))
    _assert_close32(layer.grads["kernel"], wt.grad.numpy().transpose(2, 1, 0))
    _assert_close32(layer.grads["bias"], bt.grad.numpy())


# ------------------------------------------------------------------ backward variants
def test_params_only_backward_and_logits(rng):
    x = rng.standard_normal((2, 6, 6, 2))
    layer = _conv2d(filters=3, kernel_size=3, activation="relu")
    z_layer = _conv2d(filters=3, kernel_size=3, dtype="float64")
    layer(x, training=True)
    z_layer.build_from_shape(x.shape)
    for k in layer.params:
        np.copyto(z_layer.params[k], layer.params[k])
    dy = rng.standard_normal(layer._out_shape)
    layer.zero_grads()
    dx = layer.backward(dy)
    full = {k: g.copy() for k, g in layer.grads.items()}
    layer.zero_grads()
    layer(x, training=True)
    assert layer._backward_params_only(dy) is None
    for k, g in full.items():
        np.testing.assert_allclose(layer.grads[k], g, rtol=1e-12)
    # logits and backward_from_logits: the gradient with respect to z
    z = z_layer(x, training=True)
    np.testing.assert_allclose(layer.logits, z, rtol=1e-12)
    dz = dy * (z > 0)
    layer.zero_grads()
    np.testing.assert_allclose(layer.backward_from_logits(dz), dx, rtol=1e-12)
    assert layer.backward_from_logits(dz, need_dx=False) is None


def test_frozen_conv_gets_no_gradients_but_passes_dx(rng):
    layer = Conv2D(2, 3, trainable=False)
    x = rng.standard_normal((2, 5, 5, 1))
    layer(x, training=True)
    dx = layer.backward(np.ones(layer._out_shape))
    assert dx.shape == x.shape and np.abs(dx).sum() > 0
    assert all((g == 0).all() for g in layer.grads.values())


def test_gradients_accumulate(rng):
    layer = Conv1D(2, 2)
    x = rng.standard_normal((2, 5, 3))
    dy = rng.standard_normal((2, 4, 2))
    layer(x, training=True)
    layer.zero_grads()
    layer.backward(dy)
    once = layer.grads["kernel"].copy()
    layer.backward(dy)
    np.testing.assert_allclose(layer.grads["kernel"], 2 * once)


# ------------------------------------------------------------------ errors
def test_wrong_rank_is_rejected_with_the_layer_name():
    layer = Conv2D(2, 3, name="c2")
    with pytest.raises(ValueError, match=r"'c2'.*rank >= 4"):
        layer(np.ones((2, 5, 5)))
    with pytest.raises(ValueError, match=r"'c2' \(Conv2D\) expects inputs of rank 4 \(batch, height, width, channels\)"):
        layer(np.ones((2, 5, 5, 1, 1)))
    with pytest.raises(ValueError, match=r"Conv1D\) expects inputs of rank 3 \(batch, steps, channels\)"):
        Conv1D(2, 3)(np.ones((2, 5, 5, 1)))


def test_channel_count_mismatch_after_build_names_both_sizes(rng):
    layer = Conv2D(2, 3, name="c_in")
    layer(rng.standard_normal((1, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"'c_in' \(Conv2D\) was built for 3 input channels .* got 4 channels"):
        layer(rng.standard_normal((1, 5, 5, 4)))


def test_kernel_larger_than_a_valid_input(rng):
    with pytest.raises(ValueError, match=r"'big' \(Conv2D\).*width axis has size 3 .* kernel spans 4"):
        Conv2D(2, (2, 4), name="big")(np.ones((1, 5, 3, 1)))
    with pytest.raises(ValueError, match=r"height axis has size 5 .* spans 7 \(size 4, dilation 2\)"):
        Conv2D(2, 4, dilation_rate=2)(np.ones((1, 5, 9, 1)))
    with pytest.raises(ValueError, match=r"Conv1D.*steps axis has size 2"):
        Conv1D(2, 3)(np.ones((1, 2, 1)))
    # a built layer given a smaller input later; "same" always has an output
    layer = Conv2D(1, 3, name="later")
    layer(np.ones((1, 5, 5, 1)))
    with pytest.raises(ValueError, match="'later'.*height axis has size 2"):
        layer(np.ones((1, 2, 5, 1)))
    assert Conv2D(1, 5, padding="same")(np.ones((1, 2, 2, 1))).shape == (1, 2, 2, 1)


def test_backward_needs_a_training_forward(rng):
    layer = Conv2D(2, 3)
    layer(rng.standard_normal((1, 4, 4, 1)))
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((1, 2, 2, 2)))
    layer(rng.standard_normal((1, 4, 4, 1)), training=True)
    with pytest.raises(ValueError, match="shape of the last output"):
        layer.backward(np.ones((1, 3, 3, 2)))


# ------------------------------------------------------------------ construction and config
REQUIRED = {"Conv1D": {"filters": 2, "kernel_size": 3}, "Conv2D": {"filters": 2, "kernel_size": 3}}


def _invalid_cases():
    for cls in (Conv1D, Conv2D):
        for pname, allowed in cls._param_constraints.items():
            cs = [_as_constraint(c) for c in allowed]
            for bad in [v for c in cs for v in c.invalid_examples()]:
                if not any(c.is_satisfied_by(bad) for c in cs):
                    yield pytest.param(cls, pname, bad, id=f"{cls.__name__}-{pname}-{bad!r}")


@pytest.mark.parametrize("cls,pname,bad", list(_invalid_cases()))
def test_invalid_hyperparameters_rejected_at_construction(cls, pname, bad):
    kwargs = dict(REQUIRED[cls.__name__], **{pname: bad})
    with pytest.raises(InvalidParameterError) as e:
        cls(**kwargs)
    msg = str(e.value)
    assert msg.startswith(f"The {pname!r} parameter of {cls.__name__} must be ") and msg.endswith(f"Got {bad!r} instead.")


def test_invalid_messages():
    with pytest.raises(InvalidParameterError, match=r"'kernel_size' parameter of Conv2D must be an int >= 1 or a tuple of 2 ints >= 1. Got \(3, 3, 3\)"):
        Conv2D(2, (3, 3, 3))
    with pytest.raises(InvalidParameterError, match="'padding' parameter of Conv2D must be one of 'valid', 'same'. Got 'causal'"):
        Conv2D(2, 3, padding="causal")
    with pytest.raises(InvalidParameterError, match="'data_format' parameter of Conv1D"):
        Conv1D(2, 3, data_format="channels_middle")
    with pytest.raises(InvalidParameterError, match="'algorithm' parameter of Conv1D must be one of 'auto', 'gemm', 'direct'"):
        Conv1D(2, 3, algorithm="winograd")
    with pytest.raises(ValueError, match=r"Conv2D: algorithm='winograd' needs kernel_size=\(3, 3\)"):
        Conv2D(2, 3, strides=2, algorithm="winograd")
    with pytest.raises(ValueError, match="Conv2D: the number of filters must be divisible by groups"):
        Conv2D(5, 3, groups=2)


@pytest.mark.parametrize("layer", [
    Conv2D(4, (3, 2), strides=2, padding="same", dilation_rate=(1, 1), activation="relu", use_bias=False,
           kernel_initializer="he_normal", kernel_regularizer="l2", name="conv_a"),
    Conv1D(3, 5, padding="causal", dilation_rate=2, bias_regularizer={"class_name": "L1", "config": {"l1": 0.5}},
           data_format="channels_last", dtype="float64"),
])
def test_config_round_trip_through_json(layer):
    cfg = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(cfg)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()


def test_sizes_normalized_and_keras_defaults():
    layer = Conv2D(8, 3)
    assert layer.kernel_size == (3, 3) and layer.strides == (1, 1) and layer.dilation_rate == (1, 1)
    assert layer.padding == "valid" and layer.activation is None and layer.use_bias
    assert layer.name.startswith("conv2d")
    assert Conv1D(2, [4]).kernel_size == (4,) and Conv1D(2, 4).name.startswith("conv1d")
    layer(np.ones((1, 5, 5, 3)))
    assert layer.params["kernel"].shape == (3, 3, 3, 8) and layer.params["bias"].shape == (8,)
    # Glorot uniform with Keras' fans: receptive field times channels
    limit = np.sqrt(6.0 / (9 * 3 + 9 * 8))
    assert np.abs(layer.params["kernel"]).max() <= limit


@pytest.mark.parametrize("cls,shape,kw", [
    (Conv2D, (2, 9, 8, 3), {"kernel_size": (3, 2), "strides": (2, 3), "padding": "same"}),
    (Conv2D, (2, 9, 8, 3), {"kernel_size": 3, "dilation_rate": 2}),
    (Conv1D, (2, 11, 3), {"kernel_size": 4, "strides": 2, "padding": "causal"}),
])
def test_compute_output_shape(cls, shape, kw, rng):
    layer = cls(4, **kw)
    y = layer(rng.standard_normal(shape).astype(np.float32))
    assert layer.compute_output_shape(shape) == y.shape
    assert layer.compute_output_shape((None,) + shape[1:]) == (None,) + y.shape[1:]
    open_dims = (None,) * (len(shape) - 1) + (shape[-1],)
    assert layer.compute_output_shape(open_dims) == (None,) * (len(shape) - 1) + (4,)


# ------------------------------------------------------------------ in a model
def _stack_gradient_errors(layers, x, rng):
    """Central differences of ``sum(net(x) * dy)`` for every parameter of a stack of layers,
    back-propagated as a model does: the first layer gets ``_backward_params_only``."""
    h = x
    for layer in layers:
        h = layer(h, training=True)
    dy = rng.standard_normal(h.shape)

    def loss():
        out = x
        for layer in layers:
            out = layer(out, training=True)
        return float(np.sum(out * dy))

    loss()
    for layer in layers:
        layer.zero_grads()
    g = dy
    for layer in layers[:0:-1]:
        g = layer.backward(g)
    assert layers[0]._backward_params_only(g) is None
    errs = {}
    for layer in layers:
        for k, p in layer.params.items():
            errs[f"{layer.name}/{k}"] = grad_error(layer.grads[k], numerical_gradient(loss, p))
    return errs


def _small_cnn():
    return [
        Conv2D(3, 3, padding="same", activation="tanh", bias_initializer=RAND_BIAS, dtype="float64"),
        MaxPooling2D(),
        Conv2D(4, 2, strides=2, activation="sigmoid", bias_initializer=RAND_BIAS, dtype="float64"),
        Flatten(),
        Dense(3, dtype="float64"),
    ]


def test_small_cnn_stack_gradients(rng):
    x = rng.permutation(6 * 8 * 8).reshape(6, 8, 8, 1) / 50.0  # distinct values: no max-pool ties
    errs = _stack_gradient_errors(_small_cnn(), x, rng)
    assert max(errs.values()) < TOL, errs


def test_small_cnn_model_gradients_and_training(rng):
    pytest.importorskip("normlab.optimizers")
    x = rng.permutation(6 * 8 * 8).reshape(6, 8, 8, 1) / 50.0
    y = rng.integers(0, 3, size=6)
    layers = _small_cnn()
    layers[-1] = Dense(3, activation="softmax", dtype="float64")
    model = Sequential(layers)
    model.compile("sgd", "sparse_categorical_crossentropy")
    errs = check_model_gradients(model, x, y)
    assert max(errs.values()) < TOL, errs
    assert model._fused
    losses = [model.train_on_batch(x, y) for _ in range(30)]
    assert losses[-1] < losses[0]


def test_functional_cnn_with_a_residual_add_gradients(rng):
    pytest.importorskip("normlab.optimizers")
    import normlab
    from normlab.layers import Add

    inp = normlab.Input((6, 6, 2))
    h = Conv2D(3, 3, padding="same", activation="tanh", dtype="float64")(inp)
    h = Add(dtype="float64")([h, Conv2D(3, 3, padding="same", dtype="float64")(h)])
    h = Flatten(dtype="float64")(MaxPooling2D(dtype="float64")(h))
    model = normlab.Model(inp, Dense(2, activation="softmax", dtype="float64")(h))
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.permutation(4 * 6 * 6 * 2).reshape(4, 6, 6, 2) / 50.0
    errs = check_model_gradients(model, x, np.array([0, 1, 0, 1]))
    assert max(errs.values()) < TOL, errs


def test_conv_as_the_fused_sigmoid_output_layer(rng):
    """A per-position sigmoid output with binary cross-entropy goes through backward_from_logits."""
    pytest.importorskip("normlab.optimizers")
    x = rng.standard_normal((4, 6, 2))
    y = rng.integers(0, 2, size=(4, 6, 2)).astype(float)
    model = Sequential([Conv1D(3, 3, padding="causal", activation="relu", dtype="float64"),
                        Conv1D(2, 3, padding="same", activation="sigmoid", dtype="float64")])
    model.compile("sgd", "binary_crossentropy")
    errs = check_model_gradients(model, x, y)
    assert model._fused and max(errs.values()) < TOL, errs


# ------------------------------------------------------------------ folding and weight-norm ops
@pytest.mark.parametrize("use_bias", [True, False])
def test_fold_conv_bn_params_matches_conv_then_inference_bn(use_bias, rng):
    x = rng.standard_normal((2, 7, 7, 3))
    conv = _conv2d(filters=4, kernel_size=3, padding="same", use_bias=use_bias)
    bn = BatchNormalization(epsilon=1e-3)
    bn(conv(x))  # build
    for k, v in (("moving_mean", rng.standard_normal(4)), ("moving_variance", rng.uniform(0.5, 2, 4))):
        np.copyto(bn.buffers[k], v.reshape(bn.buffers[k].shape))
    np.copyto(bn.params["gamma"], rng.uniform(0.5, 2, 4).reshape(bn.params["gamma"].shape))
    np.copyto(bn.params["beta"], rng.standard_normal(4).reshape(bn.params["beta"].shape))
    ref = bn(conv(x))
    kernel, bias = fold_conv_bn_params(
        conv.params["kernel"], conv.params.get("bias"), bn.params["gamma"], bn.params["beta"],
        bn.buffers["moving_mean"], bn.buffers["moving_variance"], bn.epsilon,
    )
    assert kernel.shape == conv.params["kernel"].shape and bias.shape == (4,)
    folded = Conv2D(4, 3, padding="same", dtype="float64")
    folded.build_from_shape(x.shape)
    np.copyto(folded.params["kernel"], kernel)
    np.copyto(folded.params["bias"], bias)
    np.testing.assert_allclose(folded(x), ref, rtol=1e-10, atol=1e-10)


def test_fold_conv_bn_params_checks_sizes():
    with pytest.raises(ValueError, match="expected 2 per-channel values"):
        fold_conv_bn_params(np.ones((3, 3, 1, 2)), None, None, None, np.zeros(3), np.ones(3), 1e-3)


@pytest.mark.parametrize("cls,shape,kw", [
    (Conv2D, (2, 7, 6, 2), {"kernel_size": 3, "strides": 2, "padding": "same"}),
    (Conv1D, (2, 9, 2), {"kernel_size": 3, "dilation_rate": 2, "padding": "causal"}),
])
def test_linear_ops_for_weight_normalization(cls, shape, kw, rng):
    """The (forward, backward) pair a WeightNormalization entry would use."""
    x = rng.standard_normal(shape)
    layer = cls(3, bias_initializer=RAND_BIAS, **kw)
    y = layer(x, training=True)
    forward, backward = conv_linear_ops(layer)
    k, b = layer.params["kernel"], layer.params["bias"]
    np.testing.assert_allclose(forward(x, k, b), y, rtol=1e-12)
    dz = rng.standard_normal(y.shape)
    layer.zero_grads()
    dx_ref = layer.backward(dz)
    dx, dk, db = backward(dz, x, k, need_param_grads=True)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12)
    np.testing.assert_allclose(dk, layer.grads["kernel"], rtol=1e-12)
    np.testing.assert_allclose(db, layer.grads["bias"], rtol=1e-12)
    assert backward(dz, x, k, need_param_grads=False)[1:] == (None, None)


# ------------------------------------------------------------------ benchmark script
def test_benchmark_script_quick_run(capsys):
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root not in sys.path:
        sys.path.insert(0, root)
    # the benchmark suite's shared timing module may live outside this checkout
    bench_conv = pytest.importorskip("benchmarks.bench_conv")

    rows = bench_conv.main(["--quick", "--repeats", "1", "--shape", "2,6,6,3", "--filters", "2",
                            "--algorithms", "auto,gemm,winograd,direct"])
    out = capsys.readouterr().out
    row = rows[0]
    assert "normlab" in out and "GEMM floor" in out and row["normlab_s"] > 0 and row["floor_s"] > 0
    assert {"normlab", "normlab gemm", "normlab winograd", "normlab direct"} <= set(row["timings"])
    if "torch NCHW_s" in row:
        for algo in ("normlab", "normlab gemm", "normlab winograd", "normlab direct"):
            assert max(row["info"][f"max_rel_diff {algo}"].values()) < 1e-4
        assert row["ratio vs torch NCHW"] > 0
