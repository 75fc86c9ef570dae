"""normlab.constraints: Keras 3's constraints_test.py ported (each test names its Keras test), plus
axis, dtype, validation and registry checks, and a live comparison with Keras (skipped without it)."""

import numpy as np
import pytest

from normlab import constraints
from normlab import InvalidParameterError


def get_example_array():
    # keras/src/constraints/constraints_test.py::get_example_array
    rs = np.random.RandomState(3537)
    example_array = rs.random_sample((100, 100)) * 100.0 - 50.0
    example_array[0, 0] = 0.0
    return example_array


# ----------------------------------------------------------------- Keras's ConstraintsTest, by name
def test_max_norm():
    """Keras: ConstraintsTest.test_max_norm."""
    x = np.array([[0, 0, 0], [1.0, 0, 0], [3, 0, 0], [3, 3, 3]]).T
    target = np.array([[0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [2.0 / np.sqrt(3)] * 3]).T
    np.testing.assert_allclose(constraints.MaxNorm(2.0)(x), target, rtol=1e-6, atol=1e-6)


def test_non_neg():
    """Keras: ConstraintsTest.test_non_neg."""
    out = constraints.NonNeg()(get_example_array())
    assert (np.min(out, axis=1) >= 0.0).all()


def test_unit_norm():
    """Keras: ConstraintsTest.test_unit_norm."""
    out = constraints.UnitNorm()(get_example_array())
    np.testing.assert_allclose(np.sqrt(np.sum(np.square(out), axis=0)), 1.0, rtol=1e-6)


def test_min_max_norm():
    """Keras: ConstraintsTest.test_min_max_norm."""
    out = constraints.MinMaxNorm(min_value=0.2, max_value=0.5)(get_example_array())
    l2 = np.sqrt(np.sum(np.square(out), axis=0))
    assert np.all(l2 >= 0.2)
    assert np.all(l2 <= 0.5 + 1e-6)


def test_get_method():
    """Keras: ConstraintsTest.test_get_method."""
    assert isinstance(constraints.get("unit_norm"), constraints.UnitNorm)
    assert constraints.get(None) is None
    with pytest.raises(ValueError):
        constraints.get("typo")


def test_default_constraint_call():
    """Keras: ConstraintsTest.test_default_constraint_call."""
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(constraints.Constraint()(x), x)


def test_constraint_get_config():
    """Keras: ConstraintsTest.test_constraint_get_config."""
    assert constraints.Constraint().get_config() == {}


def test_constraint_from_config():
    """Keras: ConstraintsTest.test_constraint_from_config."""
    assert isinstance(constraints.Constraint.from_config(constraints.Constraint().get_config()),
                      constraints.Constraint)


@pytest.mark.parametrize("make, expected", [
    # Keras: ConstraintsTest.test_max_norm_get_config
    (lambda: constraints.MaxNorm(max_value=3.0, axis=1), {"max_value": 3.0, "axis": 1}),
    # Keras: ConstraintsTest.test_unit_norm_get_config
    (lambda: constraints.UnitNorm(axis=1), {"axis": 1}),
    # Keras: ConstraintsTest.test_min_max_norm_get_config
    (lambda: constraints.MinMaxNorm(min_value=0.5, max_value=2.0, rate=0.7, axis=1),
     {"min_value": 0.5, "max_value": 2.0, "rate": 0.7, "axis": 1}),
    # Keras: ConstraintsTest.test_non_neg_get_config / test_non_neg_from_config / test_non_neg_serialization_roundtrip
    (lambda: constraints.NonNeg(), {}),
])
def test_get_config_round_trip(make, expected):
    """Keras: ConstraintsTest.test_{max_norm,unit_norm,min_max_norm,non_neg}_get_config."""
    c = make()
    assert c.get_config() == expected
    restored = type(c).from_config(c.get_config())
    assert restored.get_config() == expected
    x = get_example_array()
    np.testing.assert_array_equal(c(x), restored(x))
    # and through the registry, as a saved layer stores it
    again = constraints.deserialize(constraints.serialize(c))
    assert type(again) is type(c) and again.get_config() == expected


def test_non_neg_zeroes_negatives():
    """Keras: ConstraintsTest.test_non_neg_zeroes_negatives."""
    np.testing.assert_array_equal(constraints.NonNeg()(np.full((5, 5), -3.0)), np.zeros((5, 5)))


def test_non_neg_preserves_positives():
    """Keras: ConstraintsTest.test_non_neg_preserves_positives."""
    x = np.full((5, 5), 3.0)
    np.testing.assert_array_equal(constraints.NonNeg()(x), x)


def test_non_neg_all_zeros_input():
    """Keras: ConstraintsTest.test_non_neg_all_zeros_input."""
    np.testing.assert_array_equal(constraints.NonNeg()(np.zeros((5, 5))), np.zeros((5, 5)))


# ------------------------------------------------------------------------------ normlab's own
def test_max_norm_leaves_small_columns_alone_and_scales_large_ones_to_the_bound(rng):
    w = rng.standard_normal((6, 4))
    w[:, 0] *= 1e-2  # norm well under the bound
    out = constraints.MaxNorm(1.5)(w)
    n_in, n_out = np.linalg.norm(w, axis=0), np.linalg.norm(out, axis=0)
    np.testing.assert_allclose(n_out, np.minimum(n_in, 1.5) * n_in / (1e-7 + n_in), rtol=1e-12)
    # each column keeps its direction
    np.testing.assert_allclose(out / n_out, w / n_in, rtol=1e-12)


def test_axis_list_constrains_each_conv_filter(rng):
    """Keras's docstring: a Conv2D kernel (kh, kw, c_in, filters) takes axis=[0, 1, 2]."""
    w = rng.standard_normal((3, 3, 2, 5)) * 3
    out = constraints.MaxNorm(2.0, axis=[0, 1, 2])(w)
    np.testing.assert_allclose(np.sqrt(np.sum(out ** 2, axis=(0, 1, 2))), 2.0, rtol=1e-6)
    out = constraints.UnitNorm(axis=(0, 1, 2))(w)
    np.testing.assert_allclose(np.sqrt(np.sum(out ** 2, axis=(0, 1, 2))), 1.0, rtol=1e-6)
    assert constraints.UnitNorm(axis=(0, 1, 2)).get_config() == {"axis": [0, 1, 2]}  # JSON: a list


def test_min_max_norm_rate_moves_part_of_the_way(rng):
    w = rng.standard_normal((5, 3)) * 10
    n = np.linalg.norm(w, axis=0)
    out = constraints.MinMaxNorm(0.0, 1.0, rate=0.25)(w)
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), (0.25 * 1.0 + 0.75 * n) * n / (1e-7 + n), rtol=1e-12)
    # a norm under min_value is raised to it
    out = constraints.MinMaxNorm(min_value=20.0, max_value=30.0)(w * 1e-3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), 20.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [constraints.MaxNorm(0.5), constraints.NonNeg(), constraints.UnitNorm(),
                               constraints.MinMaxNorm(0.1, 0.3, 0.5)])
def test_dtype_kept_and_input_untouched(c, dtype, rng):
    w = rng.standard_normal((4, 3)).astype(dtype)
    before = w.copy()
    out = c(w)
    assert out.dtype == dtype
    np.testing.assert_array_equal(w, before)


def test_keras_lower_case_shortcuts_and_names():
    assert constraints.max_norm is constraints.MaxNorm
    assert constraints.non_neg is constraints.NonNeg
    assert constraints.unit_norm is constraints.UnitNorm
    assert constraints.min_max_norm is constraints.MinMaxNorm
    for name, cls in (("max_norm", constraints.MaxNorm), ("MaxNorm", constraints.MaxNorm),
                      ("non_neg", constraints.NonNeg), ("min_max_norm", constraints.MinMaxNorm)):
        assert type(constraints.get(name)) is cls
    assert constraints.get({"class_name": "MaxNorm", "config": {"max_value": 3, "axis": 1}}).get_config() == {
        "max_value": 3.0, "axis": 1}


@pytest.mark.parametrize("make, arg", [
    (lambda: constraints.MaxNorm(-1.0), "'max_value'"),
    (lambda: constraints.MaxNorm(axis="0"), "'axis'"),
    (lambda: constraints.MaxNorm(axis=[]), "'axis'"),
    (lambda: constraints.MaxNorm(axis=1.0), "'axis'"),
    (lambda: constraints.UnitNorm(axis=True), "'axis'"),
    (lambda: constraints.MinMaxNorm(rate=1.5), "'rate'"),
    (lambda: constraints.MinMaxNorm(min_value=-0.1), "'min_value'"),
])
def test_invalid_arguments_fail_at_construction(make, arg):
    with pytest.raises(InvalidParameterError, match=arg):
        make()


def test_min_above_max_and_axis_out_of_range_are_refused():
    with pytest.raises(ValueError, match="MinMaxNorm.*'min_value'"):
        constraints.MinMaxNorm(min_value=2.0, max_value=1.0)
    with pytest.raises(ValueError, match="MaxNorm.*'axis'"):
        constraints.MaxNorm(axis=2)(np.ones((3, 3)))


def test_get_refuses_a_non_constraint():
    with pytest.raises(TypeError, match="constraint"):
        constraints.get(3.0)


# --------------------------------------------------------------------- live comparison with Keras
@pytest.mark.parametrize("name, kwargs", [
    ("MaxNorm", {"max_value": 1.5}), ("MaxNorm", {"max_value": 2.0, "axis": [0, 1, 2]}),
    ("NonNeg", {}), ("UnitNorm", {"axis": 1}), ("MinMaxNorm", {"min_value": 0.5, "max_value": 2.0, "rate": 0.7}),
])
def test_matches_keras(name, kwargs):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3, 3, 2, 4)) * 2).astype(np.float32)
    if "axis" not in kwargs:
        w = w.reshape(18, 4)
    ours = getattr(constraints, name)(**kwargs)(w)
    theirs = keras.ops.convert_to_numpy(getattr(keras.constraints, name)(**kwargs)(w))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert getattr(keras.constraints, name)(**kwargs).get_config() == getattr(constraints, name)(**kwargs).get_config()
