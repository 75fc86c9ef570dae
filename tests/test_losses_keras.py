"""Losses with Keras 3's reductions, sample weights, ignore_class and labels of any rank (issue 22).

Cases marked "Keras:" are ported from keras/src/losses/losses_test.py
(Keras 3), with their expected numbers; the gradient checks are our own.
"""

import numpy as np
import pytest

import normlab
from normlab import losses
from normlab.testing import grad_error, numerical_gradient

#: Keras's assertAlmostEqual(..., 3): |difference| < 1.5e-3
K3 = 1.5e-3

Y3 = np.array([0, 1, 2])
P3 = np.array([[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]], dtype="float32")
Z3 = np.array([[8.0, 1.0, 1.0], [0.0, 9.0, 1.0], [2.0, 3.0, 5.0]])
ONEHOT3 = np.eye(3, dtype=np.int64)


# ------------------------------------------------------------------ mean squared error
MSE_T = np.array([[1, 9, 2], [-5, -2, 6]])
MSE_P = np.array([[4, 8, 12], [8, 1, 3]], dtype="float32")


def test_keras_mse_unweighted_and_weighted():
    # Keras: MeanSquaredErrorTest.test_unweighted / test_scalar_weighted / test_sample_weighted / test_zero_weighted
    mse = losses.MeanSquaredError()
    assert mse(MSE_T, MSE_P) == pytest.approx(49.5)
    assert mse(MSE_T, MSE_P, sample_weight=2.3) == pytest.approx(113.85, rel=1e-6)
    assert mse(MSE_T, MSE_P, sample_weight=np.array([[1.2], [3.4]])) == pytest.approx(767.8 / 6, rel=1e-6)
    assert mse(MSE_T, MSE_P, sample_weight=0) == 0.0


def test_keras_mse_timestep_weighted():
    # Keras: MeanSquaredErrorTest.test_timestep_weighted
    y_true = np.asarray([1, 9, 2, -5, -2, 6], dtype=np.float32).reshape(2, 3, 1)
    y_pred = np.asarray([4, 8, 12, 8, 1, 3], dtype=np.float32).reshape(2, 3, 1)
    weights = np.array([3, 6, 5, 0, 4, 2]).reshape((2, 3))
    assert losses.MeanSquaredError()(y_true, y_pred, sample_weight=weights) == pytest.approx(97.833336, rel=1e-6)


def test_keras_mse_reductions():
    # Keras: MeanSquaredErrorTest.test_no_reduction / test_sum_reduction / test_mean_with_sample_weight_reduction
    np.testing.assert_allclose(losses.MeanSquaredError(reduction=None)(MSE_T, MSE_P, sample_weight=2.3),
                               [84.3333, 143.3666], rtol=1e-5)
    assert losses.MeanSquaredError(reduction="sum")(MSE_T, MSE_P, sample_weight=2.3) == pytest.approx(227.69998, rel=1e-6)
    w = np.array([[1.2], [3.4]])
    assert losses.MeanSquaredError(reduction="mean_with_sample_weight")(MSE_T, MSE_P, sample_weight=w) == \
        pytest.approx((110 / 3 * 1.2 + 187 / 3 * 3.4) / (1.2 + 3.4), rel=1e-6)


# ------------------------------------------------------------------ categorical cross-entropy
def test_keras_cce_normalizes_probabilities_and_weighs():
    # Keras: CategoricalCrossentropyTest.test_unweighted / test_scalar_weighted / test_sample_weighted
    # (the second row of P3 sums to 1.99: Keras divides by the sum first)
    cce = losses.CategoricalCrossentropy()
    assert cce(ONEHOT3, P3) == pytest.approx(0.3239, abs=K3)
    assert cce(ONEHOT3, P3, sample_weight=2.3) == pytest.approx(0.7449, abs=K3)
    w = np.array([[1.2], [3.4], [5.6]])
    assert cce(ONEHOT3, P3, sample_weight=w) == pytest.approx(1.0696, abs=K3)
    logits = losses.CategoricalCrossentropy(from_logits=True)
    assert logits(ONEHOT3, Z3) == pytest.approx(0.0573, abs=K3)
    assert logits(ONEHOT3, Z3, sample_weight=2.3) == pytest.approx(0.1317, abs=K3)
    assert logits(ONEHOT3, Z3, sample_weight=w) == pytest.approx(0.31829, abs=K3)
    # Keras: test_no_reduction
    np.testing.assert_allclose(losses.CategoricalCrossentropy(from_logits=True, reduction=None)(ONEHOT3, Z3),
                               (0.001822, 0.000459, 0.169846), rtol=1e-3)


def test_cce_gradient_through_the_normalization():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 1.0, (4, 5))  # rows that do not sum to 1
    y = np.eye(5)[rng.integers(0, 5, 4)]
    cce = losses.CategoricalCrossentropy()
    numeric = numerical_gradient(lambda: cce(y, p), p)
    assert grad_error(cce.gradient(y, p), numeric) < 1e-7
    # a row scaled by a constant is the same distribution: the same loss
    assert cce(y, p) == pytest.approx(cce(y, p * 3.0), rel=1e-12)


# ------------------------------------------------------------------ sparse categorical cross-entropy
def test_keras_scce_values_and_weights():
    # Keras: SparseCategoricalCrossentropyTest.test_unweighted / test_scalar_weighted / test_sample_weighted
    scce = losses.SparseCategoricalCrossentropy()
    assert scce(Y3, P3) == pytest.approx(0.3239, abs=K3)
    assert scce(Y3[:, None], P3, sample_weight=2.3) == pytest.approx(0.7449, abs=K3)
    w = np.array([[1.2], [3.4], [5.6]])
    assert scce(Y3[:, None], P3, sample_weight=w) == pytest.approx(1.0696, abs=K3)
    logits = losses.SparseCategoricalCrossentropy(from_logits=True)
    assert logits(Y3, Z3) == pytest.approx(0.0573, abs=K3)
    assert logits(Y3[:, None], Z3, sample_weight=2.3) == pytest.approx(0.1317, abs=K3)
    assert logits(Y3[:, None], Z3, sample_weight=w) == pytest.approx(0.31829, abs=K3)
    np.testing.assert_allclose(losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(Y3, Z3),
                               (0.001822, 0.000459, 0.169846), rtol=1e-3)


def test_keras_scce_ignore_class():
    # Keras: SparseCategoricalCrossentropyTest.test_ignore_class
    logits = np.array([[[0.854, 0.698, 0.598], [0.088, 0.86, 0.018]]])
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1, reduction=None)
    np.testing.assert_allclose(loss(np.array([[-1, 2]]), logits), [[0.0, 1.480129]], rtol=1e-5)
    np.testing.assert_allclose(loss(np.array([[[-1], [2]]]), logits), [[0.0, 1.480129]], rtol=1e-5)
    # the mean runs over the labels that count
    mean = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    assert mean(np.array([[-1, 2]]), logits) == pytest.approx(1.480129, rel=1e-5)


def test_keras_scce_binary_segmentation():
    # Keras: SparseCategoricalCrossentropyTest.test_binary_segmentation (labels per pixel)
    y_true = np.array([[0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 1]])
    y_pred = np.array([
        [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.2, 0.8]],
        [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
        [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
        [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.4]],
    ])
    expected = np.array([-np.log(0.2), -np.log(0.4)]).sum() / 16.0
    assert losses.SparseCategoricalCrossentropy()(y_true, y_pred) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight"])
@pytest.mark.parametrize("ignore", [None, 7])
def test_weighted_scce_gradients_per_pixel(from_logits, reduction, ignore):
    rng = np.random.default_rng(1)
    out = rng.standard_normal((3, 2, 4, 5)) if from_logits else rng.uniform(0.05, 1.0, (3, 2, 4, 5))
    y = rng.integers(0, 5, (3, 2, 4))
    if ignore is not None:
        y[0, 1, 2] = y[2, 0, 0] = ignore
    w = rng.uniform(0.1, 2.0, 3)
    loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=ignore, reduction=reduction)
    numeric = numerical_gradient(lambda: loss(y, out, sample_weight=w), out)
    analytic = loss.gradient(y, out, sample_weight=w)
    assert grad_error(analytic, numeric) < 1e-7
    if ignore is not None:
        assert not analytic[0, 1, 2].any() and not analytic[2, 0, 0].any()


@pytest.mark.parametrize("name", ["mse", "binary_crossentropy", "categorical_crossentropy"])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight"])
def test_weighted_gradients(name, from_logits, reduction):
    rng = np.random.default_rng(2)
    cls = type(losses.get(name))
    loss = cls(from_logits=from_logits, reduction=reduction)
    out = rng.standard_normal((4, 3)) if from_logits or name == "mse" else rng.uniform(0.05, 0.95, (4, 3))
    y = rng.uniform(0, 1, (4, 3)) if name != "categorical_crossentropy" else np.eye(3)[rng.integers(0, 3, 4)]
    w = rng.uniform(0.0, 2.0, 4)
    numeric = numerical_gradient(lambda: loss(y, out, sample_weight=w), out)
    assert grad_error(loss.gradient(y, out, sample_weight=w), numeric) < 1e-7
    # without weights and with the default reduction, the weighted path is the plain one
    plain = cls(from_logits=from_logits)
    assert plain.weighted_value_and_gradient(y, out)[0] == pytest.approx(plain(y, out), rel=1e-12)


def test_reduction_is_validated_and_kept_in_the_config():
    with pytest.raises(normlab.InvalidParameterError, match="'reduction' parameter of MeanSquaredError"):
        losses.MeanSquaredError(reduction="avg")
    with pytest.raises(normlab.InvalidParameterError, match="'ignore_class'"):
        losses.SparseCategoricalCrossentropy(ignore_class=1.5)
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255, reduction="sum")
    back = losses.deserialize(losses.serialize(loss))
    assert (back.ignore_class, back.reduction, back.from_logits) == (255, "sum", True)


@pytest.mark.parametrize("weights,match", [
    (np.array([1.0, -1.0, 1.0]), "finite weights >= 0"),
    (np.array([1.0, np.nan, 1.0]), "finite weights >= 0"),
    (np.array([1.0, 2.0]), "one weight per sample"),
    (np.array(["a", "b", "c"]), "real numbers"),
])
def test_bad_sample_weights_are_refused(weights, match):
    with pytest.raises((ValueError, TypeError), match=match):
        losses.SparseCategoricalCrossentropy()(Y3, P3, sample_weight=weights)


# ------------------------------------------------------------------ every Keras loss: gradients and training
_RNG = np.random.default_rng(7)
_P = _RNG.uniform(0.05, 0.95, size=(4, 5))
_Z = _RNG.normal(size=(4, 5))
_Y01 = (_RNG.uniform(size=(4, 5)) > 0.5).astype(np.float64)
_YREAL = _RNG.normal(size=(4, 5))
_ONEHOT = np.eye(5)[[0, 3, 1, 4]]
_SOFT = _RNG.dirichlet(np.ones(5), size=4)

GRAD_CASES = [
    ("MeanAbsoluteError", lambda: losses.MeanAbsoluteError(), _YREAL, _Z),
    ("MeanAbsolutePercentageError", lambda: losses.MeanAbsolutePercentageError(), _YREAL, _Z),
    ("MeanSquaredLogarithmicError", lambda: losses.MeanSquaredLogarithmicError(), np.abs(_YREAL), _P * 3),
    ("Huber", lambda: losses.Huber(delta=0.7), _YREAL, _Z),
    ("LogCosh", lambda: losses.LogCosh(), _YREAL, _Z * 3),
    ("CosineSimilarity", lambda: losses.CosineSimilarity(), _YREAL, _Z),
    ("CosineSimilarity-axis0", lambda: losses.CosineSimilarity(axis=0), _YREAL, _Z),
    ("Hinge", lambda: losses.Hinge(), _Y01, _Z),
    ("SquaredHinge", lambda: losses.SquaredHinge(), _Y01 * 2 - 1, _Z),
    ("CategoricalHinge", lambda: losses.CategoricalHinge(), _ONEHOT, _Z),
    ("KLDivergence", lambda: losses.KLDivergence(), _SOFT, _P),
    ("Poisson", lambda: losses.Poisson(), np.abs(_YREAL), _P * 2),
    ("Dice", lambda: losses.Dice(), _Y01, _P),
    ("Dice-axis", lambda: losses.Dice(axis=(1,)), _Y01, _P),
    ("Tversky", lambda: losses.Tversky(alpha=0.3, beta=0.7), _Y01, _P),
    ("BinaryFocal", lambda: losses.BinaryFocalCrossentropy(gamma=1.5), _Y01, _P),
    ("BinaryFocal-balanced-logits", lambda: losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, from_logits=True, label_smoothing=0.1), _Y01, _Z),
    ("CategoricalFocal", lambda: losses.CategoricalFocalCrossentropy(gamma=2.5), _SOFT, _P),
    ("CategoricalFocal-logits", lambda: losses.CategoricalFocalCrossentropy(from_logits=True, label_smoothing=0.1),
     _ONEHOT, _Z),
    ("GeneralizedCE", lambda: losses.CategoricalGeneralizedCrossEntropy(q=0.3), np.array([0, 3, 1, 4]), _P),
    ("CCE-axis0", lambda: losses.CategoricalCrossentropy(axis=0, label_smoothing=0.1), _ONEHOT, _P),
    ("SCCE-axis0-logits", lambda: losses.SparseCategoricalCrossentropy(axis=0, from_logits=True),
     np.array([0, 3, 1, 2, 3]), _Z),
    ("BCE-axis0-logits", lambda: losses.BinaryCrossentropy(axis=0, from_logits=True), _Y01, _Z),
]


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum"])
@pytest.mark.parametrize("label, make, y, out", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_every_loss_gradient_float64(label, make, y, out, reduction):
    """Central differences in float64, with per-sample weights and each reduction."""
    loss = make()
    loss.reduction = reduction
    out = out.copy()
    if "axis" not in label:  # along axis 0 the values are per column: no per-sample weights
        w = np.linspace(0.5, 1.5, out.shape[0])
        numeric = numerical_gradient(lambda: loss(y, out, sample_weight=w), out)
        assert grad_error(loss.gradient(y, out, sample_weight=w), numeric) < 1e-6
    numeric = numerical_gradient(lambda: loss(y, out), out)
    assert grad_error(loss.gradient(y, out), numeric) < 1e-6


@pytest.mark.parametrize("name", ["mae", "mape", "msle", "huber", "log_cosh", "cosine_similarity", "hinge",
                                  "squared_hinge", "categorical_hinge", "kld", "poisson", "dice", "tversky",
                                  "binary_focal_crossentropy", "categorical_focal_crossentropy"])
def test_every_loss_trains_a_model(name):
    """Each loss by name in compile: a few steps of training lower it (the gradient reaches the weights)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6))
    onehot = np.eye(3)[rng.integers(0, 3, 64)]
    act = "softmax" if name in ("categorical_hinge", "kld", "categorical_focal_crossentropy", "dice", "tversky",
                                "binary_focal_crossentropy") else "sigmoid" if name in ("msle", "poisson") else None
    model = normlab.Sequential([normlab.Input((6,)), normlab.layers.Dense(3, activation=act)], seed=0)
    if name == "mape":  # targets away from 0: the percentage error divides by them
        onehot = onehot + 1.0
    model.compile(normlab.optimizers.SGD(0.05), loss=name)
    before = model.evaluate(x, onehot, verbose=0)
    model.fit(x, onehot, epochs=5, batch_size=16, verbose=0)
    assert model.evaluate(x, onehot, verbose=0) < before


def test_loss_functions_are_per_sample_and_compile():
    """Keras's function forms return one value per sample; compile(loss=function) trains with its class."""
    y, p = _YREAL, _Z
    for fn, cls in ((losses.mae, losses.MeanAbsoluteError), (losses.huber, losses.Huber),
                    (losses.log_cosh, losses.LogCosh), (losses.mean_squared_error, losses.MeanSquaredError)):
        values = fn(y, p)
        assert values.shape == (4,)
        assert float(np.mean(values)) == pytest.approx(cls()(y, p), rel=1e-12)
        assert type(losses.get(fn)) is cls


def test_axis_matches_moved_axis():
    """A class axis other than the last gives the loss of the moved arrays, and the moved gradient."""
    p = _P / _P.sum(axis=0, keepdims=True)
    loss = losses.CategoricalCrossentropy(axis=0)
    ref = losses.CategoricalCrossentropy()
    assert loss(_ONEHOT, p) == pytest.approx(ref(_ONEHOT.T, p.T), rel=1e-12)
    np.testing.assert_allclose(loss.gradient(_ONEHOT, p), ref.gradient(_ONEHOT.T, p.T).T, rtol=1e-12)
    assert loss.fused_activation is None and ref.fused_activation == "softmax"


def test_loss_dtype_result():
    """Keras's dtype: the inputs are cast to it and the value has it."""
    v = losses.MeanAbsoluteError(dtype="float16")(_YREAL, _Z)
    assert np.asarray(v).dtype == np.float16
    assert isinstance(losses.MeanAbsoluteError()(_YREAL, _Z), float)
    with pytest.raises(normlab.InvalidParameterError, match="'dtype' parameter of MeanAbsoluteError"):
        losses.MeanAbsoluteError(dtype="int32")


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight"])
def test_circle_gradient_float64(reduction):
    """Circle: every value depends on the whole batch; its gradient (of the reduced value) by central differences."""
    rng = np.random.default_rng(3)
    p = rng.normal(size=(6, 4))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    y = np.array([0, 0, 1, 1, 2, 2])
    w = np.linspace(0.5, 1.5, 6)
    loss = losses.Circle(gamma=8.0, margin=0.25, reduction=reduction)
    numeric = numerical_gradient(lambda: loss(y, p, sample_weight=w), p)
    assert grad_error(loss.gradient(y, p, sample_weight=w), numeric) < 1e-6
