"""A catalogue of bad arguments and bad inputs for Conv1D / Conv2D: what each is told, and what is left as it was.

The standard: a hyperparameter is refused at construction with
``InvalidParameterError`` ("The 'groups' parameter of Conv2D must be an int in
the range [1, inf). Got 0 instead."), a combination of them with a
``ValueError`` that names the class and the arguments; a bad input at call
time with an error naming the layer; a failed call leaves the layer as it was.

Where normlab departs from Keras 3 on purpose (``keras/src/layers/
convolutional/base_conv.py``): ``strides > 1`` together with
``dilation_rate > 1`` is accepted (Keras refuses it; the result is PyTorch's,
checked here against a direct sum), and ``padding`` / ``data_format`` are not
lower-cased (Keras takes ``"SAME"``; normlab refuses it by name).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import normlab
from normlab._validation import InvalidParameterError
from normlab.kernels import conv as K
from normlab.layers import Conv1D, Conv2D

ALGORITHMS_2D = ("gemm", "direct", "winograd")
ALGORITHMS_1D = ("gemm", "direct")


def _make(cls, **kw):
    args = {"filters": 6, "kernel_size": 3}
    args.update(kw)
    return cls(**args)


# ------------------------------------------------------------------ one argument at a time
BAD_ONE = [
    # (argument, value, what the message says is expected); each for both classes unless the rank is given
    ("algorithm", "fft", "one of 'auto', 'gemm'"),
    ("algorithm", "GEMM", "one of 'auto', 'gemm'"),
    ("algorithm", None, "one of 'auto', 'gemm'"),
    ("algorithm", 3, "one of 'auto', 'gemm'"),
    ("algorithm", ["gemm"], "one of 'auto', 'gemm'"),
    ("algorithm", True, "one of 'auto', 'gemm'"),
    ("groups", 0, r"an int in the range \[1, inf\)"),
    ("groups", -2, r"an int in the range \[1, inf\)"),
    ("groups", True, r"an int in the range \[1, inf\)"),
    ("groups", np.bool_(True), r"an int in the range \[1, inf\)"),
    ("groups", 2.0, r"an int in the range \[1, inf\)"),
    ("groups", "2", r"an int in the range \[1, inf\)"),
    ("groups", None, r"an int in the range \[1, inf\)"),
    ("data_format", "NHWC", "None or one of 'channels_last', 'channels_first'"),
    ("data_format", "channels_mid", "None or one of 'channels_last', 'channels_first'"),
    ("data_format", "CHANNELS_LAST", "None or one of 'channels_last', 'channels_first'"),
    ("data_format", "", "None or one of 'channels_last', 'channels_first'"),
    ("data_format", 1, "None or one of 'channels_last', 'channels_first'"),
    ("kernel_size", 0, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("kernel_size", -1, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("kernel_size", (3, 3, 3), "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("kernel_size", (), "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("kernel_size", 2.5, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("kernel_size", 3.0, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("kernel_size", True, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("kernel_size", "3", "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("kernel_size", None, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("kernel_size", np.array([3, 3]), "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("strides", 0, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("strides", -2, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("strides", (2, 2, 2), "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("strides", 1.5, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("dilation_rate", 0, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("dilation_rate", -1, "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("dilation_rate", (1, 1, 1), "an int >= 1 or a tuple of {rank} ints >= 1"),
    ("padding", "full", "one of 'valid', 'same'"),
    ("padding", "SAME", "one of 'valid', 'same'"),
    ("padding", None, "one of 'valid', 'same'"),
    ("padding", (1, 1), "one of 'valid', 'same'"),
    ("filters", 0, r"an int in the range \[1, inf\)"),
    ("filters", -3, r"an int in the range \[1, inf\)"),
    ("filters", 2.0, r"an int in the range \[1, inf\)"),
    ("filters", True, r"an int in the range \[1, inf\)"),
    ("filters", None, r"an int in the range \[1, inf\)"),
]


def _bad_one_cases():
    for cls in (Conv1D, Conv2D):
        for arg, value, expected in BAD_ONE:
            yield pytest.param(cls, arg, value, expected.replace("{rank}", str(cls.rank)),
                               id=f"{cls.__name__}-{arg}-{value!r}")
    # per rank: a tuple of the other rank's length, a zero inside a tuple, a bool inside a tuple
    for arg in ("kernel_size", "strides", "dilation_rate"):
        two, one = "an int >= 1 or a tuple of 2 ints >= 1", "an int >= 1 or a tuple of 1 ints >= 1"
        yield pytest.param(Conv2D, arg, (3,), two, id=f"Conv2D-{arg}-1-tuple")
        yield pytest.param(Conv2D, arg, (3, 0), two, id=f"Conv2D-{arg}-zero-inside")
        yield pytest.param(Conv2D, arg, (3, True), two, id=f"Conv2D-{arg}-bool-inside")
        yield pytest.param(Conv1D, arg, (3, 3), one, id=f"Conv1D-{arg}-2-tuple")
    yield pytest.param(Conv2D, "padding", "causal", r"one of 'valid', 'same'\. Got 'causal'", id="Conv2D-causal")


@pytest.mark.parametrize("cls, arg, value, expected", list(_bad_one_cases()))
def test_a_bad_hyperparameter_is_refused_at_construction(cls, arg, value, expected):
    with pytest.raises(InvalidParameterError, match=rf"^The '{arg}' parameter of {cls.__name__} must be "
                                                    rf"(None or )?{expected}"):
        _make(cls, **{arg: value})
    # both TypeError and ValueError catch it (scikit-learn's and Keras's habits)
    with pytest.raises(TypeError):
        _make(cls, **{arg: value})
    with pytest.raises(ValueError):
        _make(cls, **{arg: value})


def test_winograd_on_conv1d_says_why():
    with pytest.raises(InvalidParameterError, match=r"^The 'algorithm' parameter of Conv1D must be one of 'auto', "
                                                    r"'gemm', 'direct' \(Winograd's F\(2x2, 3x3\) is for Conv2D "
                                                    r"only\). Got 'winograd' instead.$"):
        Conv1D(4, 3, algorithm="winograd")


@pytest.mark.parametrize("cls", [Conv1D, Conv2D])
def test_filters_not_divisible_by_groups(cls):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: the number of filters must be divisible by groups; "
                                         r"got filters=6, groups=4\.$"):
        _make(cls, groups=4)
    with pytest.raises(ValueError, match="filters=5, groups=2"):
        cls(5, 3, groups=2)


@pytest.mark.parametrize("kw, got", [
    ({"strides": 2}, "strides=(2, 2)"),
    ({"kernel_size": 5}, "kernel_size=(5, 5)"),
    ({"kernel_size": (3, 1)}, "kernel_size=(3, 1)"),
    ({"dilation_rate": 2}, "dilation_rate=(2, 2)"),
    ({"strides": (1, 2)}, "strides=(1, 2)"),
])
def test_forcing_winograd_on_a_shape_it_cannot_do_is_refused_at_construction(kw, got):
    with pytest.raises(ValueError, match=r"^Conv2D: algorithm='winograd' needs kernel_size=\(3, 3\), "
                                         r"strides=\(1, 1\) and dilation_rate=\(1, 1\); got .*" + re.escape(got)):
        Conv2D(6, **{"kernel_size": 3, **kw, "algorithm": "winograd"})


def test_auto_falls_back_to_gemm_where_winograd_does_not_apply(rng):
    """'auto' never fails on a shape: a 5 x 5 kernel with 8 channels and 32 filters takes GEMM, the same bits."""
    x = rng.standard_normal((2, 9, 9, 8)).astype(np.float32)
    auto = Conv2D(32, 5, algorithm="auto", padding="same")
    gemm = Conv2D(32, 5, algorithm="gemm", padding="same")
    y_auto = auto(x)
    gemm(x)
    gemm.set_weights(auto.get_weights())
    np.testing.assert_array_equal(y_auto, gemm(x))


def test_valid_spellings_are_accepted():
    layer = Conv2D(np.int64(4), [np.int64(3), 3], strides=(1, np.int32(1)), groups=np.int64(2),
                   data_format="channels_last", algorithm="direct")
    assert layer.filters == 4 and layer.kernel_size == (3, 3) and layer.groups == 2
    assert type(layer.filters) is int and all(type(k) is int for k in layer.kernel_size)
    assert Conv1D(2, [4], padding="causal").kernel_size == (4,)


def test_strides_and_dilation_together_are_accepted_unlike_keras(rng):
    """Keras refuses strides > 1 with dilation_rate > 1; normlab computes it (PyTorch's result): a direct sum."""
    x = rng.standard_normal((2, 11, 10, 3))
    layer = Conv2D(4, 3, strides=2, dilation_rate=2, dtype="float64")
    y = layer(x)
    w, b = layer.params["kernel"], layer.params["bias"]
    assert y.shape == (2, 4, 3, 4)  # (11 - 5) // 2 + 1 rows, (10 - 5) // 2 + 1 columns
    expected = np.zeros(y.shape)
    for i in range(4):
        for j in range(3):
            patch = x[:, 2 * i : 2 * i + 5 : 2, 2 * j : 2 * j + 5 : 2, :]
            expected[:, i, j] = np.einsum("nhwc,hwcf->nf", patch, w) + b
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ at call time
def test_wrong_rank_names_the_layer_and_the_rank():
    c2 = Conv2D(2, 3, name="c2")
    with pytest.raises(ValueError, match=r"^Layer 'c2' \(Conv2D\) expects inputs of rank >= 4"):
        c2(np.ones((5, 5, 1)))
    with pytest.raises(ValueError, match=r"^Layer 'c2' \(Conv2D\) expects inputs of rank 4 \(batch, height, width, "
                                         r"channels\), got rank 5"):
        c2(np.ones((1, 5, 5, 1, 1)))
    assert not c2.built
    cf = Conv2D(2, 3, data_format="channels_first", name="cf")
    with pytest.raises(ValueError, match=r"rank 4 \(batch, channels, height, width\), got rank 5"):
        cf(np.ones((1, 1, 5, 5, 1)))
    c1 = Conv1D(2, 3, name="c1")
    with pytest.raises(ValueError, match=r"^Layer 'c1' \(Conv1D\) expects inputs of rank >= 3"):
        c1(np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"^Layer 'c1' \(Conv1D\) expects inputs of rank 3 \(batch, steps, channels\)"):
        c1(np.ones((2, 5, 5, 1)))


@pytest.mark.parametrize("data_format, shape, bad, axis", [
    ("channels_last", (2, 6, 6, 3), (2, 6, 6, 4), "last axis"),
    ("channels_first", (2, 3, 6, 6), (2, 4, 6, 6), "axis 1 axis"),
])
def test_wrong_channel_count_after_build_leaves_the_weights(rng, data_format, shape, bad, axis):
    layer = Conv2D(4, 3, data_format=data_format, name="chan")
    layer(rng.standard_normal(shape))
    before = [w.copy() for w in layer.get_weights()]
    with pytest.raises(ValueError, match=r"^Layer 'chan' \(Conv2D\) was built for 3 input channels "
                                         + re.escape(f"({axis}), got 4 channels in an input of shape {bad}.")):
        layer(rng.standard_normal(bad))
    for w0, w1 in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    assert layer.input_shape == (None,) + shape[1:]


@pytest.mark.parametrize("cls, shape", [(Conv2D, (2, 6, 6, 4)), (Conv1D, (2, 6, 4))])
def test_input_channels_not_divisible_by_groups_leaves_the_layer_unbuilt(cls, shape, rng):
    layer = cls(6, 3, groups=3, name="grouped")
    with pytest.raises(ValueError, match=rf"^Layer 'grouped' \({cls.__name__}\): the number of input channels must "
                                         r"be divisible by groups; got 4 channels and groups=3"):
        layer(rng.standard_normal(shape))
    assert not layer.built and layer.params == {}
    # the same layer then builds on a good input
    good = shape[:-1] + (6,)
    assert layer(rng.standard_normal(good)).shape[-1] == 6
    assert layer.params["kernel"].shape[-2:] == (2, 6)


def test_an_empty_channel_axis_is_refused():
    with pytest.raises(ValueError, match=r"^Layer 'empty' \(Conv2D\): the channel axis \(last\) of \(2, 6, 6, 0\) is "
                                         r"empty\."):
        Conv2D(2, 3, name="empty")(np.zeros((2, 6, 6, 0)))


def test_an_input_too_small_for_the_kernel_leaves_the_layer_unbuilt():
    layer = Conv2D(2, 3, name="small")
    with pytest.raises(ValueError, match=r"^Layer 'small' \(Conv2D\) with padding='valid' cannot take an input of "
                                         r"shape \(2, 2, 6, 1\): the height axis has size 2"):
        layer(np.ones((2, 2, 6, 1)))
    assert not layer.built and layer.params == {}


@pytest.mark.parametrize("x, what", [
    (np.array([[[["a"]]]]), "dtype <U1"),
    (np.ones((1, 5, 5, 1), dtype=complex), "dtype complex128"),
    (np.empty((1, 5, 5, 1), dtype=object), "dtype object"),
])
def test_inputs_that_are_not_real_numbers(x, what):
    layer = Conv2D(2, 3, name="typed")
    with pytest.raises(TypeError, match=rf"^Layer 'typed' \(Conv2D\): 'x' must hold real numbers; got an array of "
                                        rf"{what}"):
        layer(x)
    assert not layer.built


def test_integer_and_bool_inputs_are_read_as_float32(rng):
    layer = Conv2D(2, 3)
    x = rng.integers(-3, 4, (2, 5, 5, 1))
    y = layer(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, layer(x.astype(np.float32)))
    assert layer(x > 0).dtype == np.float32


@pytest.mark.parametrize("cls, shape, kw", [
    (Conv2D, (0, 7, 7, 4), {"algorithm": "gemm", "padding": "same"}),
    (Conv2D, (0, 7, 7, 4), {"algorithm": "direct", "strides": 2}),
    (Conv2D, (0, 7, 7, 4), {"algorithm": "winograd", "groups": 2}),
    (Conv2D, (0, 4, 7, 7), {"data_format": "channels_first"}),
    (Conv1D, (0, 9, 4), {"padding": "causal", "dilation_rate": 2}),
    (Conv1D, (0, 4, 9), {"data_format": "channels_first", "groups": 4}),
])
def test_an_empty_batch_gives_an_empty_output_and_zero_gradients(cls, shape, kw, rng):
    """As Dense and the pooling layers do (and Keras): no error, shape (0, ...); before this the kernels failed
    with "max() arg is an empty sequence"."""
    layer = cls(8, 3, **kw)
    full = rng.standard_normal((2,) + shape[1:]).astype(np.float32)
    expected = layer(full).shape[1:]
    y = layer(np.zeros(shape, np.float32), training=True)
    assert y.shape == (0,) + expected and y.dtype == np.float32
    layer.zero_grads()
    dx = layer.backward(np.zeros(y.shape, np.float32))
    assert dx.shape == shape
    assert all(not g.any() for g in layer.grads.values())
    # an unbuilt layer builds on an empty batch, as Dense does
    fresh = cls(8, 3, **kw)
    assert fresh(np.zeros(shape, np.float32)).shape == (0,) + expected and fresh.built


def test_an_empty_batch_still_checks_the_spatial_sizes():
    with pytest.raises(ValueError, match="the height axis has size 2"):
        Conv2D(2, 3)(np.zeros((0, 2, 6, 1)))


# ------------------------------------------------------------------ NaN and inf
def _window_mask(k, s, d, pad_before, out_len, pos):
    """Which outputs along one axis read input position ``pos``."""
    return np.array([any(o * s - pad_before + t * d == pos for t in range(k)) for o in range(out_len)])


def _tile_mask(pad_before, out_len, pos):
    """Which outputs along one axis lie in a Winograd F(2, 3) tile whose 4 inputs (padded) hold ``pos``."""
    p = pos + pad_before
    return np.array([2 * (o // 2) <= p <= 2 * (o // 2) + 3 for o in range(out_len)])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy on NaN: the point here
@pytest.mark.parametrize("algorithm", ALGORITHMS_2D)
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("pos", [(3, 3), (0, 5), (4, 0)])
def test_a_non_finite_input_stays_in_its_windows_and_its_example(rng, algorithm, padding, value, pos):
    """Like Dense and the pooling layers, a convolution called directly passes NaN and inf on (Model.fit/predict
    refuse them). GEMM and direct spread one to exactly the outputs that read it; Winograd at most to the 2 x 2
    output tiles that read it (the NumPy kernels' transforms multiply by zeros); none to another example."""
    layer = Conv2D(4, 3, padding=padding, algorithm=algorithm, groups=2 if algorithm == "direct" else 1)
    x = rng.standard_normal((3, 8, 7, 4)).astype(np.float32)
    clean = layer(x)
    x[1, pos[0], pos[1], 1] = value
    y = layer(x)
    geom = K.conv_geometry((8, 7), (3, 3), (1, 1), (1, 1), padding)
    (pt, _), (pl, _) = geom.pads
    rows = _window_mask(3, 1, 1, pt, y.shape[1], pos[0])
    cols = _window_mask(3, 1, 1, pl, y.shape[2], pos[1])
    # the channel sits in group 0 of the direct layer's two groups: only filters 0-1 read it
    filters = np.arange(4) < (2 if algorithm == "direct" else 4)
    window = rows[:, None, None] & cols[None, :, None] & filters[None, None, :]
    bad = ~np.isfinite(y[1])
    if algorithm == "winograd":
        tile = _tile_mask(pt, y.shape[1], pos[0])[:, None, None] & _tile_mask(pl, y.shape[2], pos[1])[None, :, None]
        assert (bad >= window).all() and (bad <= tile).all()
    else:
        np.testing.assert_array_equal(bad, window)
    np.testing.assert_array_equal(y[[0, 2]], clean[[0, 2]])
    np.testing.assert_array_equal(y[1][~bad], clean[1][~bad])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy on NaN: the point here
@pytest.mark.parametrize("algorithm", ALGORITHMS_1D)
@pytest.mark.parametrize("kw", [{"padding": "causal"}, {"strides": 2, "dilation_rate": 2, "padding": "same"}])
def test_conv1d_non_finite_input_stays_in_its_windows(rng, algorithm, kw):
    layer = Conv1D(3, 3, algorithm=algorithm, **kw)
    x = rng.standard_normal((2, 12, 2))
    clean = layer(x)
    x[0, 5, 0] = np.nan
    y = layer(x)
    pad = {"causal": (4 if kw.get("dilation_rate") else 2, 0)}.get(kw["padding"])
    if pad is None:
        pad = K.same_padding(12, 3, kw.get("strides", 1), kw.get("dilation_rate", 1))
    mask = _window_mask(3, kw.get("strides", 1), kw.get("dilation_rate", 1), pad[0], y.shape[1], 5)
    np.testing.assert_array_equal(np.isnan(y[0]).any(-1), mask)
    np.testing.assert_array_equal(np.isnan(y[0]).all(-1), mask)
    np.testing.assert_array_equal(y[1], clean[1])


def test_models_refuse_non_finite_inputs_before_any_convolution():
    model = normlab.Sequential([normlab.Input((5, 5, 1)), Conv2D(2, 3)])
    x = np.ones((2, 5, 5, 1), np.float32)
    x[1, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        model.predict(x, verbose=0)


# ------------------------------------------------------------------ sizes beyond any array, symbolic calls
@pytest.mark.parametrize("arg, value", [("strides", 10**30), ("kernel_size", (3, 2**31)), ("dilation_rate", 2**40)])
def test_sizes_beyond_any_array_are_refused_at_construction(arg, value):
    """Before, strides=10**30 reached numba's kernels and failed there with a TypingError."""
    with pytest.raises(InvalidParameterError, match=rf"^The '{arg}' parameter of Conv2D must be an int >= 1 or a "
                                                    r"tuple of 2 ints >= 1, each at most 2147483647\. Got "
                                                    + re.escape(repr(value)) + r" instead\.$"):
        Conv2D(2, **{"kernel_size": 3, arg: value})
    # the largest accepted stride: one output position
    assert Conv1D(2, 3, strides=2**31 - 1)(np.ones((1, 5, 1))).shape == (1, 1, 2)


def test_a_symbolic_call_checks_the_channels_as_a_build_would():
    """Functional models: the error comes at the layer's call on the Input (as in Keras), not at Model(...)."""
    with pytest.raises(ValueError, match=r"^Layer 'g' \(Conv2D\): the number of input channels must be divisible by "
                                         r"groups; got 3 channels and groups=2 \(input shape \(None, 5, 5, 3\)\)\.$"):
        Conv2D(4, 3, groups=2, name="g")(normlab.Input((5, 5, 3)))
    built = Conv2D(4, 3, name="b")
    built(np.ones((1, 5, 5, 2)))
    with pytest.raises(ValueError, match=r"^Layer 'b' \(Conv2D\) was built for 2 input channels \(last axis\), got 3 "
                                         r"channels in an input of shape \(None, 5, 5, 3\)\.$"):
        built(normlab.Input((5, 5, 3)))
    assert built(normlab.Input((5, 5, 2))).shape == (None, 3, 3, 4)
    # an open channel size is left to the build
    assert Conv2D(4, 3, groups=2)(normlab.Input((5, 5, None))).shape == (None, 3, 3, 4)
