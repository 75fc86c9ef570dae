"""Keras 3's merging layer tests, ported (keras/src/layers/merging/merging_test.py).

Each test names the Keras test it ports. Keras's ``compute_mask`` checks
and the ``*_with_mask`` tests need masks, and ``test_correctness_static`` /
``_dynamic`` build a two-input functional ``Model``: normlab has neither
(docs/keras.md); the merge itself is checked on eager calls here, and the
two-input model is one strict xfail.
"""

import numpy as np
import pytest

import normlab
from normlab import layers

from _layer_harness import run_layer_test


def np_dot(a, b, axes):
    if isinstance(axes, int):
        axes = (axes, axes)
    axes = [axis if axis < 0 else axis - 1 for axis in axes]
    res = np.stack([np.tensordot(a[i], b[i], axes) for i in range(a.shape[0])])
    if len(res.shape) == 1:
        res = np.expand_dims(res, axis=1)
    return res


CASES = [
    ("add", layers.Add, np.add, {}, (2, 4, 5), (2, 4, 5)),
    ("subtract", layers.Subtract, np.subtract, {}, (2, 4, 5), (2, 4, 5)),
    ("minimum", layers.Minimum, np.minimum, {}, (2, 4, 5), (2, 4, 5)),
    ("maximum", layers.Maximum, np.maximum, {}, (2, 4, 5), (2, 4, 5)),
    ("multiply", layers.Multiply, np.multiply, {}, (2, 4, 5), (2, 4, 5)),
    ("average", layers.Average, lambda a, b: np.multiply(np.add(a, b), 0.5), {}, (2, 4, 5), (2, 4, 5)),
    ("concat", layers.Concatenate, lambda a, b, **kw: np.concatenate((a, b), **kw), {"axis": -1}, (2, 4, 5),
     (2, 4, 10)),
    ("dot_2d", layers.Dot, np_dot, {"axes": -1}, (2, 4), (2, 1)),
    ("dot_3d", layers.Dot, np_dot, {"axes": -1}, (2, 4, 5), (2, 4, 4)),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name, cls, np_op, init_kwargs, input_shape, expected_output_shape", CASES, ids=IDS)
def test_basic(name, cls, np_op, init_kwargs, input_shape, expected_output_shape):
    """Keras: MergingLayersTest.test_basic (build on two shapes, weights, config, symbolic call)."""
    layer = cls(**init_kwargs)
    layer.build([input_shape, input_shape])
    assert layer.built and layer.weights == []
    cfg = layer.get_config()
    assert cls.from_config(cfg).get_config() == cfg
    rng = np.random.default_rng(0)
    y = layer([rng.random(input_shape), rng.random(input_shape)])
    assert y.shape == expected_output_shape
    inp = [normlab.Input(shape=input_shape[1:]), normlab.Input(shape=input_shape[1:])]
    assert cls(**init_kwargs)(inp).shape == (None, *expected_output_shape[1:])


@pytest.mark.parametrize("name, cls, np_op, init_kwargs, input_shape, expected_output_shape", CASES, ids=IDS)
@pytest.mark.parametrize("batch", ["static", "dynamic"])
def test_correctness(name, cls, np_op, init_kwargs, input_shape, expected_output_shape, batch):
    """Keras: MergingLayersTest.test_correctness_static / _dynamic (the merge on eager inputs and its symbolic
    shape with a fixed or open batch size; the two-input Model: test_two_input_functional_model)."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.random(input_shape), rng.random(input_shape)
    res = cls(**init_kwargs)([x1, x2])
    assert res.shape == expected_output_shape
    np.testing.assert_allclose(res, np_op(x1, x2, **init_kwargs), atol=1e-4)
    size = input_shape[0] if batch == "static" else None
    inp = [normlab.Input(shape=input_shape[1:], batch_size=size) for _ in range(2)]
    assert cls(**init_kwargs)(inp).shape == (size, *expected_output_shape[1:])


@pytest.mark.xfail(strict=True, raises=NotImplementedError,
                   reason="normlab's functional Model takes one Input and one output")
def test_two_input_functional_model():
    """Keras: MergingLayersTest.test_correctness_static (models.Model([input_1, input_2], out))."""
    x1, x2 = np.ones((2, 4, 5)), np.ones((2, 4, 5))
    i1, i2 = normlab.Input(shape=(4, 5)), normlab.Input(shape=(4, 5))
    model = normlab.Model([i1, i2], layers.Add()([i1, i2]))
    np.testing.assert_allclose(model([x1, x2]), x1 + x2)


def test_subtract_layer_inputs_length_errors():
    """Keras: MergingLayersTest.test_subtract_layer_inputs_length_errors."""
    inputs = [normlab.Input(shape=(4, 5)) for _ in range(3)]
    with pytest.raises(ValueError, match="Subtract"):
        layers.Subtract()(inputs)
    with pytest.raises(ValueError, match="Subtract"):
        layers.Subtract()(inputs[:1])


def test_dot_higher_dim():
    """Keras: MergingLayersTest.test_dot_higher_dim."""
    a = normlab.Input(batch_shape=(1, 3, 2))
    b = normlab.Input(batch_shape=(1, 1, 2, 3))
    assert layers.Dot(axes=(-2, -1))([a, b]).shape == (1, 2, 1, 2)
    rng = np.random.default_rng(0)
    a, b = rng.random((1, 3, 2)), rng.random((1, 1, 2, 3))
    c = layers.Dot(axes=(-2, -1))([a, b])
    assert c.shape == (1, 2, 1, 2)
    np.testing.assert_allclose(c, np_dot(a, b, (-2, -1)))


@pytest.mark.parametrize("cls, x1, x2, expected", [
    (layers.Add, [[[0, 0], [1, 2], [0, 0], [3, 4]]], [[[0, 0], [0, 0], [1, 2], [3, 4]]],
     [[[0, 0], [1, 2], [1, 2], [6, 8]]]),
    (layers.Subtract, [[[0, 0], [1, 2], [0, 0], [3, 4]]], [[[0, 0], [0, 0], [1, 2], [3, 4]]],
     [[[0, 0], [1, 2], [-1, -2], [0, 0]]]),
    (layers.Average, [[[0, 0], [1, 2], [0, 0], [3, 4]]], [[[0, 0], [0, 0], [1, 2], [3, 4]]],
     [[[0, 0], [0.5, 1], [0.5, 1], [3, 4]]]),
], ids=["add", "subtract", "average"])
def test_with_mask_unmasked_half(cls, x1, x2, expected):
    """Keras: MergingLayersTest.test_{add,subtract,average}_with_mask (the first output, where only x1 went
    through Masking: the values are the plain merge). Multiply, Maximum and Minimum treat masked entries as
    1, -inf and inf in Keras, so their cases need masks (test_compute_mask)."""
    np.testing.assert_allclose(cls()([np.array(x1, float), np.array(x2, float)]), expected)


def test_concatenate_with_mask_unmasked_half():
    """Keras: MergingLayersTest.test_concatenate_with_mask (the values; the masks need Masking)."""
    x1 = np.array([[[0, 0], [1, 2], [0, 0], [3, 4]]], float)
    x2 = np.array([[[0, 0], [0, 0], [1, 2], [3, 4]]], float)
    np.testing.assert_allclose(layers.Concatenate(axis=1)([x1, x2]),
                               [[[0, 0], [1, 2], [0, 0], [3, 4], [0, 0], [0, 0], [1, 2], [3, 4]]])
    np.testing.assert_allclose(layers.Concatenate(axis=2)([x1, x2]),
                               [[[0, 0, 0, 0], [1, 2, 0, 0], [0, 0, 1, 2], [3, 4, 3, 4]]])


@pytest.mark.xfail(strict=True, raises=AttributeError, reason="normlab has no masks (Masking, compute_mask)")
def test_compute_mask():
    """Keras: MergingLayersTest.test_errors, test_{multiply,maximum,minimum}_with_mask and the compute_mask
    checks of test_correctness_static/_dynamic."""
    x = np.ones((2, 4, 5))
    assert layers.Add().compute_mask([x, x], [None, None]) is None


# ============================================ normlab's own: gradients in float64
@pytest.mark.parametrize("make, shapes", [
    (lambda: layers.Maximum(), [(3, 4), (3, 4), (3, 4)]),
    (lambda: layers.Minimum(), [(3, 4), (3, 4)]),
    (lambda: layers.Dot(axes=-1), [(3, 4), (3, 4)]),
    (lambda: layers.Dot(axes=(1, 2)), [(2, 3, 4), (2, 5, 3)]),
    (lambda: layers.Dot(axes=(-2, -1)), [(2, 3, 2), (2, 1, 2, 3)]),
    (lambda: layers.Dot(axes=-1, normalize=True), [(3, 4), (3, 4)]),
], ids=["maximum", "minimum", "dot", "dot_axes", "dot_higher", "dot_normalize"])
def test_merge_backward_matches_central_differences(make, shapes, rng):
    """Not a Keras test: dL/dx_i of the merges normlab added, against central differences in float64."""
    xs = [rng.normal(size=s) for s in shapes]
    layer = make()
    y = layer(xs, training=True)
    w = rng.normal(size=y.shape)
    grads = layer.backward(w)
    eps = 1e-6
    for x, g in zip(xs, grads):
        num = np.empty_like(x)
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + eps
            fp = np.sum(w * make()(xs))
            x[i] = old - eps
            fm = np.sum(w * make()(xs))
            x[i] = old
            num[i] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_dot_normalize_is_cosine_similarity(rng):
    """Keras: Dot(normalize=True) gives the cosine similarity of the two inputs."""
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(layers.Dot(axes=1, normalize=True)([a, b])[:, 0], cos, rtol=1e-12)
