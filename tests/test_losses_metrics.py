import json

import numpy as np
import pytest

from normlab import losses, metrics
from normlab.kernels.activations import sigmoid, softmax
from normlab.testing import check_loss_gradients, numerical_gradient, rel_error


def onehot(labels, k):
    return np.eye(k)[labels]


@pytest.fixture
def data(rng):
    z = rng.standard_normal((6, 4)) * 2
    labels = rng.integers(0, 4, 6)
    return z, labels


def test_losses_match_textbook_formulas(data):
    z, labels = data
    p = softmax(z)
    y = onehot(labels, 4)
    assert losses.CategoricalCrossentropy()(y, p) == pytest.approx(-np.mean(np.sum(y * np.log(p), 1)))
    assert losses.SparseCategoricalCrossentropy()(labels, p) == pytest.approx(-np.mean(np.log(p[np.arange(6), labels])))
    assert losses.CategoricalCrossentropy(from_logits=True)(y, z) == pytest.approx(losses.CategoricalCrossentropy()(y, p))
    assert losses.SparseCategoricalCrossentropy(from_logits=True)(labels, z) == pytest.approx(
        losses.SparseCategoricalCrossentropy()(labels, p)
    )
    yb = (z > 0).astype(float)
    pb = sigmoid(z)
    bce = -np.mean(yb * np.log(pb) + (1 - yb) * np.log(1 - pb))
    assert losses.BinaryCrossentropy()(yb, pb) == pytest.approx(bce)
    assert losses.BinaryCrossentropy(from_logits=True)(yb, z) == pytest.approx(bce)
    assert losses.MeanSquaredError()(yb, z) == pytest.approx(np.mean((z - yb) ** 2))


@pytest.mark.parametrize(
    "loss,target",
    [
        (losses.MeanSquaredError(), "real"),
        (losses.BinaryCrossentropy(), "binary"),
        (losses.BinaryCrossentropy(from_logits=True), "binary"),
        (losses.CategoricalCrossentropy(), "onehot"),
        (losses.CategoricalCrossentropy(from_logits=True), "onehot"),
        (losses.SparseCategoricalCrossentropy(), "sparse"),
        (losses.SparseCategoricalCrossentropy(from_logits=True), "sparse"),
    ],
)
def test_loss_gradients_central_differences(loss, target, data, rng):
    z, labels = data
    y = {
        "real": rng.standard_normal(z.shape),
        "binary": rng.uniform(0, 1, z.shape),
        "onehot": onehot(labels, 4),
        "sparse": labels,
    }[target]
    pred = z if loss.from_logits or target == "real" else (softmax(z) if target in ("onehot", "sparse") else sigmoid(z))
    assert check_loss_gradients(loss, y, pred) < 1e-6


def test_fused_logits_gradient_equals_chain_through_softmax(data):
    z, labels = data
    p = softmax(z)
    g_p = losses.SparseCategoricalCrossentropy().gradient(labels, p)
    chained = p * (g_p - np.sum(g_p * p, axis=1, keepdims=True))
    fused = losses.SparseCategoricalCrossentropy(from_logits=True).gradient(labels, z)
    np.testing.assert_allclose(fused, chained, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fused, (p - onehot(labels, 4)) / 6, rtol=1e-12)


@pytest.mark.parametrize("cls", [losses.SparseCategoricalCrossentropy, losses.CategoricalCrossentropy,
                                 losses.BinaryCrossentropy])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_and_gradient_from_logits_equal_the_separate_calls(cls, smoothing, dtype, data):
    # the training step asks for both at once; the shared computation must change no bit
    z, labels = data
    z = (z * 30).astype(dtype)  # large logits: the shift by the maximum matters
    y = {losses.SparseCategoricalCrossentropy: labels,
         losses.CategoricalCrossentropy: onehot(labels, 4).astype(dtype),
         losses.BinaryCrossentropy: (z > 0).astype(dtype)}[cls]
    loss = cls(from_logits=True, label_smoothing=smoothing)
    value, grad = loss.value_and_gradient_from_logits(y, z)
    assert value == loss.value_from_logits(y, z)
    assert grad.dtype == dtype
    np.testing.assert_array_equal(grad, loss.gradient_from_logits(y, z))


def test_logits_forms_are_stable():
    z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    v = losses.SparseCategoricalCrossentropy(from_logits=True)(np.array([1, 1]), z)
    assert v == pytest.approx(1000.0)
    g = losses.SparseCategoricalCrossentropy(from_logits=True).gradient(np.array([1, 1]), z)
    assert np.isfinite(g).all()
    b = losses.BinaryCrossentropy(from_logits=True)(np.array([[0.0], [1.0]]), np.array([[800.0], [800.0]]))
    assert b == pytest.approx(400.0)


def test_torch_cross_entropy_reference(data):
    torch = pytest.importorskip("torch")
    z, labels = data
    t = torch.tensor(z, requires_grad=True)
    out = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    out.backward()
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    assert loss(labels, z) == pytest.approx(out.item(), rel=1e-12)
    np.testing.assert_allclose(loss.gradient(labels, z), t.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("from_logits", [True, False])
def test_label_smoothing_matches_torch(data, from_logits):
    torch = pytest.importorskip("torch")
    z, labels = data
    s = 0.2
    t = torch.tensor(z, requires_grad=True)
    out = torch.nn.functional.cross_entropy(t, torch.tensor(labels), label_smoothing=s)
    out.backward()
    pred = z if from_logits else softmax(z)
    sparse = losses.SparseCategoricalCrossentropy(from_logits=from_logits, label_smoothing=s)
    dense = losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=s)
    assert sparse(labels, pred) == pytest.approx(out.item(), rel=1e-10)
    assert dense(onehot(labels, 4), pred) == pytest.approx(out.item(), rel=1e-10)
    if from_logits:
        np.testing.assert_allclose(sparse.gradient(labels, z), t.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(dense.gradient(onehot(labels, 4), z), t.grad.numpy(), rtol=1e-10)


def test_binary_label_smoothing_is_kerass_formula(data, rng):
    z, _ = data
    y = (rng.uniform(size=z.shape) > 0.5).astype(float)
    ys = y * 0.9 + 0.05
    p = sigmoid(z)
    expect = -np.mean(ys * np.log(p) + (1 - ys) * np.log(1 - p))
    for loss, pred in [(losses.BinaryCrossentropy(label_smoothing=0.1), p),
                       (losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), z)]:
        assert loss(y, pred) == pytest.approx(expect, rel=1e-10)
        assert check_loss_gradients(loss, y, pred) < 1e-6


@pytest.mark.parametrize("cls", [losses.CategoricalCrossentropy, losses.SparseCategoricalCrossentropy])
@pytest.mark.parametrize("from_logits", [True, False])
def test_label_smoothing_gradients_central_differences(cls, from_logits, data):
    z, labels = data
    y = labels if cls is losses.SparseCategoricalCrossentropy else onehot(labels, 4)
    loss = cls(from_logits=from_logits, label_smoothing=0.3)
    # smoothing puts weight on probabilities near 1e-4, where the third
    # derivative of log p makes h = 1e-6 central differences inexact
    h = 1e-6 if from_logits else 1e-8
    assert check_loss_gradients(loss, y, z if from_logits else softmax(z), h=h) < 1e-6


def test_label_smoothing_validation_and_config():
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.CategoricalCrossentropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.SparseCategoricalCrossentropy(label_smoothing=-0.1)
    l = losses.SparseCategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    c = losses.deserialize(json.loads(json.dumps(losses.serialize(l))))
    assert type(c) is losses.SparseCategoricalCrossentropy and c.label_smoothing == 0.1 and c.from_logits


@pytest.mark.parametrize("bad", [np.array([0, 1, 4, 2, 0, 1]), np.array([0, -1, 1, 2, 0, 1])])
def test_labels_out_of_range(bad, data):
    z, _ = data
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        losses.SparseCategoricalCrossentropy(from_logits=True)(bad, z)


def test_target_shape_and_value_errors(data):
    z, labels = data
    with pytest.raises(ValueError, match="shape"):
        losses.CategoricalCrossentropy()(np.eye(3)[labels % 3], softmax(z))
    with pytest.raises(ValueError, match="integers"):
        losses.SparseCategoricalCrossentropy()(labels + 0.5, softmax(z))
    with pytest.raises(ValueError, match="NaN"):
        losses.MeanSquaredError()(np.full(z.shape, np.nan), z)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        losses.BinaryCrossentropy()(np.full(z.shape, 2.0), sigmoid(z))


def test_loss_config_and_lookup():
    for name, cls in [("mse", losses.MeanSquaredError), ("categorical_crossentropy", losses.CategoricalCrossentropy),
                      ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy),
                      ("binary_crossentropy", losses.BinaryCrossentropy)]:
        assert type(losses.get(name)) is cls
    l = losses.BinaryCrossentropy(from_logits=True)
    c = losses.deserialize(json.loads(json.dumps(losses.serialize(l))))
    assert c.from_logits and type(c) is losses.BinaryCrossentropy
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.get("hinge_of_doom")


def test_metrics():
    y = np.array([0, 2, 1, 1])
    p = np.array([[0.9, 0.1, 0], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3], [0.8, 0.1, 0.1]])
    m = metrics.get("accuracy", losses.SparseCategoricalCrossentropy())
    assert isinstance(m, metrics.SparseCategoricalAccuracy)
    m.update_state(y, p)
    assert m.result() == pytest.approx(0.75)
    m.update_state(y[:2], p[[3, 3]])
    assert m.result() == pytest.approx(4 / 6)
    m.reset_state()
    assert m.result() == 0.0
    c = metrics.get("accuracy", losses.CategoricalCrossentropy())
    c.update_state(np.eye(3)[y], p)
    assert c.result() == pytest.approx(0.75)
    b = metrics.get("accuracy", losses.BinaryCrossentropy())
    b.update_state(np.array([[1], [0], [1]]), np.array([[0.7], [0.6], [0.2]]))
    assert b.result() == pytest.approx(1 / 3)
