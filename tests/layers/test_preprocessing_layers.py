"""Preprocessing layers (issue 4): Normalization, Rescaling and image augmentation."""

import json

import numpy as np
import pytest

import normlab
from normlab import InvalidParameterError
from normlab._validation import _as_constraint
from normlab.layers import (
    Dense,
    Normalization,
    RandomFlip,
    RandomRotation,
    RandomTranslation,
    RandomZoom,
    Rescaling,
    deserialize,
    serialize,
)
from normlab.layers.augmentation import _apply_plan, _apply_plan_transpose, _resample_plan
from normlab.testing import check_layer_gradients


def images(n=3, h=6, w=5, c=2, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, h, w, c)).astype(dtype)


# ------------------------------------------------------------------ Normalization
def test_normalization_adapt_standardizes_per_feature():
    rng = np.random.default_rng(0)
    x = rng.normal([1.0, -5.0, 1e4], [2.0, 0.1, 3.0], size=(500, 3)).astype(np.float32)
    layer = Normalization().adapt(x)
    np.testing.assert_allclose(layer.buffers["mean"], x.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(layer.buffers["variance"], x.astype(np.float64).var(0), rtol=1e-5)
    y = layer(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(y.std(0), 1, rtol=1e-3)
    back = Normalization(mean=layer.mean, variance=layer.variance, invert=True)(y)
    np.testing.assert_allclose(back, x, rtol=1e-5)


@pytest.mark.parametrize("axis,kept", [(-1, (3,)), (None, (1,)), ((1, 3), (4, 3)), (2, (5,))])
def test_normalization_axes_like_keras(axis, kept):
    x = images(8, 4, 5, 3, seed=1) * 3 + 2
    layer = Normalization(axis=axis, dtype="float64").adapt(x)
    assert layer.buffers["mean"].shape == kept
    keep = () if axis is None else tuple(a % 4 for a in np.atleast_1d(axis))
    red = tuple(d for d in range(4) if d not in keep)
    mean, var = x.mean(red, keepdims=True), x.var(red, keepdims=True)
    np.testing.assert_allclose(layer(x), (x - mean) / np.sqrt(var), rtol=1e-10, atol=1e-12)


def test_normalization_given_statistics_and_zero_variance_guard():
    layer = Normalization(mean=[1.0, 2.0], variance=[4.0, 0.0], dtype="float64")
    x = np.array([[3.0, 2.0], [1.0, 2.5]])
    np.testing.assert_allclose(layer(x), [[1.0, 0.0], [0.0, 0.5 / 1e-7]])  # max(sqrt(var), 1e-7)
    assert np.isfinite(layer(x)).all()
    np.testing.assert_allclose(Normalization(mean=3.0, variance=4.0, dtype="float64")(x), (x - 3) / 2)
    with pytest.raises(ValueError, match="broadcast"):
        Normalization(mean=[1.0, 2.0, 3.0], variance=1.0)(x)


def test_normalization_is_identity_before_adapt_and_gradients():
    x = np.random.default_rng(2).standard_normal((4, 3))
    np.testing.assert_array_equal(Normalization(dtype="float64")(x), x)
    for invert in (False, True):
        layer = Normalization(mean=[0.5, -1, 2], variance=[0.25, 4, 9], invert=invert, dtype="float64")
        assert check_layer_gradients(layer, x)["x"] < 1e-7
        layer(x, training=True)
        assert layer._backward_params_only(np.ones_like(x)) is None
    assert not Normalization(mean=0.0, variance=1.0).params  # statistics are buffers, never trained


def test_normalization_errors():
    x = np.ones((4, 3))
    with pytest.raises(InvalidParameterError, match="'variance' parameter of Normalization"):
        Normalization(mean=[0.0, 1.0])
    with pytest.raises(InvalidParameterError, match="non-negative"):
        Normalization(mean=0.0, variance=-1.0)
    with pytest.raises(ValueError, match="batch axis"):
        Normalization(axis=0)(x)
    layer = Normalization().adapt(x)
    with pytest.raises(ValueError, match="built for size 3"):
        layer(np.ones((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        Normalization().adapt(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="non-empty"):
        Normalization().adapt(np.ones((0, 3)))


def test_normalization_and_rescaling_are_saved_with_the_model(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(5, 3, size=(50, 4)).astype(np.float32)
    model = normlab.Sequential([Rescaling([1.0, 2.0, 0.5, -1.0], offset=0.25), Normalization(), Dense(2)])
    model.build((None, 4), seed=0)
    model.layers[1].adapt(model.layers[0](x))
    model.save(tmp_path / "pre.npz")
    loaded = normlab.load_model(tmp_path / "pre.npz")
    np.testing.assert_array_equal(loaded.layers[1].buffers["mean"], model.layers[1].buffers["mean"])
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


# ------------------------------------------------------------------ Rescaling
def test_rescaling_formula_and_gradient():
    x = np.random.default_rng(4).standard_normal((5, 3))
    np.testing.assert_allclose(Rescaling(1 / 255)(np.full((2, 2), 255.0)), 1.0)
    layer = Rescaling([2.0, -1.0, 0.5], offset=[0.0, 1.0, -1.0], dtype="float64")
    np.testing.assert_allclose(layer(x), x * [2.0, -1.0, 0.5] + [0.0, 1.0, -1.0])
    assert check_layer_gradients(layer, x)["x"] < 1e-7
    with pytest.raises(ValueError, match="does not broadcast"):
        Rescaling([1.0, 2.0])(x)
    with pytest.raises(ValueError, match="does not broadcast"):
        Rescaling(np.ones((5, 3)))(x)  # would depend on the batch size


# ------------------------------------------------------------------ augmentation: common
AUGMENT = [
    lambda **k: RandomFlip(**k),
    lambda **k: RandomFlip("horizontal", **k),
    lambda **k: RandomRotation(0.2, **k),
    lambda **k: RandomRotation((-0.1, 0.3), fill_mode="constant", fill_value=0.5, interpolation="nearest", **k),
    lambda **k: RandomTranslation(0.2, (-0.3, 0.1), fill_mode="wrap", **k),
    lambda **k: RandomTranslation((0.1, 0.4), 0.0, fill_mode="nearest", **k),
    lambda **k: RandomZoom(0.3, **k),
    lambda **k: RandomZoom((-0.5, -0.2), (0.1, 0.5), fill_mode="constant", **k),
]
AUG_IDS = ["flip", "flip-h", "rot", "rot-const-nearest", "trans-wrap", "trans-nearest", "zoom", "zoom-const"]


@pytest.mark.parametrize("make", AUGMENT, ids=AUG_IDS)
def test_augmentation_identity_at_inference_keeps_shape_in_training(make):
    x = images(6, 7, 5, 3, dtype=np.float32)
    layer = make(seed=1)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = layer(x, training=True)
    assert y.shape == x.shape and y.dtype == np.float32
    assert not np.array_equal(y, x)


@pytest.mark.parametrize("make", AUGMENT, ids=AUG_IDS)
def test_augmentation_exact_backward(make):
    x = images(2, 5, 4, 2, seed=3)
    layer = make(seed=2)
    with layer.fixed_noise():
        assert check_layer_gradients(layer, x)["x"] < 1e-7
    assert layer._backward_params_only(np.ones_like(x)) is None


@pytest.mark.parametrize("make", AUGMENT, ids=AUG_IDS)
def test_augmentation_seeded_and_state_round_trip(make):
    x = images(4, 6, 6, 1, seed=4, dtype=np.float32)
    a, b = make(seed=5), make(seed=5)
    np.testing.assert_array_equal(a(x, training=True), b(x, training=True))
    state = json.loads(json.dumps(a.get_rng_state()))
    expected = a(x, training=True)
    c = deserialize(json.loads(json.dumps(serialize(a))))
    c.set_rng_state(state)
    np.testing.assert_array_equal(c(x, training=True), expected)


def test_augmentation_is_per_image_and_keeps_labels():
    """Each image gets its own parameters; image i of the output comes from image i of the input."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 5, 5, 1))
    y = RandomFlip(seed=0)(x, training=True)
    flips = []
    for i in range(len(x)):
        cands = {
            "none": x[i], "h": x[i][:, ::-1], "v": x[i][::-1], "hv": x[i][::-1, ::-1],
        }
        match = [k for k, v in cands.items() if np.array_equal(y[i], v)]
        assert match, f"output {i} is not a flip of input {i}"
        flips.append(match[0])
    assert len(set(flips)) > 1
    same = np.repeat(x[:1], 8, axis=0)
    out = RandomRotation(0.5, seed=0)(same, training=True)
    assert len({out[i].tobytes() for i in range(8)}) == 8


def test_augmentation_inside_a_model_keeps_batch_order():
    x = images(10, 6, 6, 1, seed=7, dtype=np.float32)
    model = normlab.Sequential([RandomFlip("vertical"), RandomTranslation(0.1, 0.1), Rescaling(2.0)])
    model.build((None, 6, 6, 1), seed=1)
    np.testing.assert_array_equal(model.predict(x), 2 * x)
    out = model(x, training=True)
    assert out.shape == x.shape
    # a constant image stays (mostly) constant: no mixing across the batch
    const = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((1, 6, 6, 1), np.float32)
    np.testing.assert_allclose(model(const, training=True), 2 * const, rtol=1e-6)


def test_augmentation_rejects_non_image_input():
    with pytest.raises(ValueError, match="expects inputs of rank >= 4"):
        RandomFlip()(np.ones((2, 3, 4)), training=True)
    with pytest.raises(ValueError, match="channels-last image batches"):
        RandomZoom(0.1)(np.ones((2, 3, 4, 5, 6)), training=True)


# ------------------------------------------------------------------ augmentation: geometry
def test_rotation_quarter_turn_is_rot90_counterclockwise():
    x = images(2, 5, 5, 2, seed=8)
    for fill in ("reflect", "constant"):
        y = RandomRotation((0.25, 0.25), fill_mode=fill)(x, training=True)
        np.testing.assert_allclose(y, np.rot90(x, k=1, axes=(1, 2)), atol=1e-12)
    np.testing.assert_allclose(RandomRotation(0.0)(x, training=True), x, atol=1e-12)
    np.testing.assert_allclose(RandomZoom(0.0)(x, training=True), x, atol=1e-12)


def test_translation_by_whole_pixels_and_fill_modes():
    # one row a b c d shifted right by 2 pixels (width_factor 0.5 of width 4)
    row = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4, 1)
    expect = {
        "reflect": [2, 1, 1, 2],
        "wrap": [3, 4, 1, 2],
        "nearest": [1, 1, 1, 2],
        "constant": [-9, -9, 1, 2],
    }
    for mode, e in expect.items():
        for interp in ("bilinear", "nearest"):
            layer = RandomTranslation(0.0, (0.5, 0.5), fill_mode=mode, fill_value=-9, interpolation=interp)
            np.testing.assert_allclose(layer(row, training=True).ravel(), e, err_msg=f"{mode}/{interp}")
    # down by one row of three (height_factor 1/3)
    x = np.arange(12.0).reshape(1, 3, 4, 1)
    y = RandomTranslation((1 / 3, 1 / 3), 0.0, fill_mode="constant")(x, training=True)
    np.testing.assert_allclose(y[0, 1:], x[0, :2], atol=1e-12)
    np.testing.assert_allclose(y[0, 0], 0.0, atol=1e-12)


def test_zoom_out_by_two_samples_every_other_pixel():
    # zoom 2 (factor +1) about the centre of a 5-wide image reads x_in = 2 x - 2
    row = np.arange(5.0).reshape(1, 1, 5, 1) + 10
    y = RandomZoom(0.0, (1.0, 1.0), fill_mode="constant", fill_value=-1)(row, training=True)
    np.testing.assert_allclose(y.ravel(), [-1, 10, 12, 14, -1])


def test_affine_resampling_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = images(3, 7, 6, 2, seed=9)
    rng = np.random.default_rng(10)
    t = rng.uniform(-1, 1, size=3)
    mats = np.stack([np.cos(t) * 1.1, -np.sin(t), rng.uniform(-2, 2, 3), np.sin(t), np.cos(t) * 0.9, rng.uniform(-2, 2, 3)], 1)
    modes = {"reflect": "reflect", "nearest": "nearest", "wrap": "grid-wrap", "constant": "grid-constant"}
    for ours, theirs in modes.items():
        for interp, order in (("bilinear", 1), ("nearest", 0)):
            plan = _resample_plan(mats, x.shape, interpolation=interp, fill_mode=ours, dtype=np.float64)
            y = _apply_plan(x, plan, 0.5)
            for n in range(3):
                a0, a1, a2, b0, b1, b2 = mats[n]
                for ch in range(2):
                    ref = ndimage.affine_transform(
                        x[n, :, :, ch], [[b1, b0], [a1, a0]], offset=[b2, a2], order=order, mode=theirs, cval=0.5
                    )
                    np.testing.assert_allclose(y[n, :, :, ch], ref, atol=1e-10, err_msg=f"{ours}/{interp}")


def test_resampling_backward_is_the_adjoint():
    x = images(2, 6, 5, 3, seed=11)
    dy = images(2, 6, 5, 3, seed=12)
    mats = np.array([[0.9, -0.3, 1.2, 0.4, 1.1, -0.7], [1.0, 0.0, -2.5, 0.0, 1.0, 0.5]])
    for mode in ("reflect", "wrap", "nearest", "constant"):
        plan = _resample_plan(mats, x.shape, interpolation="bilinear", fill_mode=mode, dtype=np.float64)
        lhs = np.sum(_apply_plan(x, plan, 0.0) * dy)
        rhs = np.sum(x * _apply_plan_transpose(dy, plan))
        assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


# ------------------------------------------------------------------ config and validation
CONFIGURED = [
    Normalization(axis=[1, 2], mean=[[1.0, 2.0]], variance=[[3.0, 4.0]], invert=True),
    Normalization(axis=None),
    Rescaling([1.0, 2.0], offset=-0.5),
    RandomFlip("vertical", seed=3),
    RandomRotation((-0.2, 0.1), fill_mode="constant", fill_value=1.5, interpolation="nearest", seed=4),
    RandomTranslation(0.1, (-0.2, 0.3), fill_mode="wrap"),
    RandomZoom(0.2, (0.1, 0.4), seed=1),
]


@pytest.mark.parametrize("layer", CONFIGURED, ids=lambda l: type(l).__name__)
def test_config_round_trip_through_json(layer):
    config = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()


REQUIRED = {
    "Normalization": {},
    "Rescaling": {"scale": 1.0},
    "RandomFlip": {},
    "RandomRotation": {"factor": 0.1},
    "RandomTranslation": {"height_factor": 0.1, "width_factor": 0.1},
    "RandomZoom": {"height_factor": 0.1},
}


def _cases():
    for name, required in REQUIRED.items():
        cls = getattr(normlab.layers, name)
        for pname, allowed in cls._param_constraints.items():
            cs = [_as_constraint(c) for c in allowed]
            for bad in [v for c in cs for v in c.invalid_examples()]:
                if not any(c.is_satisfied_by(bad) for c in cs):
                    yield pytest.param(cls, required, pname, bad, id=f"{name}-{pname}-{bad!r}")


@pytest.mark.parametrize("cls,required,pname,bad", list(_cases()))
def test_invalid_hyperparameters_rejected_at_construction(cls, required, pname, bad):
    with pytest.raises(InvalidParameterError) as e:
        cls(**{**required, pname: bad})
    assert str(e.value).startswith(f"The {pname!r} parameter of {cls.__name__} must be ")


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomRotation(-0.1),
        lambda: RandomRotation((0.3, 0.1)),
        lambda: RandomTranslation(1.5, 0.1),
        lambda: RandomTranslation(0.1, (-1.2, 0.0)),
        lambda: RandomZoom((-1.5, 0.0)),
        lambda: RandomFlip("diagonal"),
        lambda: RandomZoom(0.1, fill_mode="mirror"),
    ],
)
def test_keras_factor_conventions_enforced(make):
    with pytest.raises(InvalidParameterError):
        make()
