import json

import numpy as np
import pytest

from normlab import initializers as I


@pytest.mark.parametrize(
    "name,var",
    [
        ("glorot_normal", 2 / (300 + 200)),
        ("glorot_uniform", 2 / (300 + 200)),
        ("he_normal", 2 / 300),
        ("he_uniform", 2 / 300),
        ("lecun_normal", 1 / 300),
        ("lecun_uniform", 1 / 300),
    ],
)
def test_variance_scaling_variances(name, var):
    w = I.get(name)((300, 200), dtype="float64", rng=np.random.default_rng(0))
    assert w.shape == (300, 200)
    assert w.var() == pytest.approx(var, rel=0.03)
    assert abs(w.mean()) < 0.01 * np.sqrt(var) * 10


def test_uniform_limits_and_truncation():
    w = I.GlorotUniform(seed=0)((100, 50))
    assert np.abs(w).max() <= np.sqrt(6 / 150)
    t = I.TruncatedNormal(stddev=1.0, seed=0)((1000,))
    assert np.abs(t).max() <= 2.0


def test_constant_zeros_ones_random():
    assert (I.get("zeros")((2, 2)) == 0).all() and (I.get("ones")((3,)) == 1).all()
    assert (I.Constant(2.5)((2,)) == 2.5).all()
    r = I.RandomUniform(-1, 1, seed=0)((1000,))
    assert r.min() >= -1 and r.max() < 1
    n = I.RandomNormal(3.0, 0.5, seed=0)((4000,))
    assert n.mean() == pytest.approx(3.0, abs=0.05) and n.std() == pytest.approx(0.5, rel=0.05)


def test_seeded_objects_are_reproducible_and_unseeded_use_given_rng():
    a, b = I.HeNormal(seed=7), I.HeNormal(seed=7)
    np.testing.assert_array_equal(a((4, 4)), b((4, 4)))
    g = I.get("glorot_uniform")
    np.testing.assert_array_equal(g((3, 3), rng=np.random.default_rng(1)), g((3, 3), rng=np.random.default_rng(1)))
    assert a((3,)).dtype == np.float32


@pytest.mark.parametrize("cls", [I.Zeros, I.Ones, I.GlorotNormal, I.HeUniform, I.LecunNormal])
def test_config_round_trip(cls):
    obj = cls()
    clone = I.deserialize(json.loads(json.dumps(I.serialize(obj))))
    assert type(clone) is cls and clone.get_config() == obj.get_config()


def test_invalid():
    with pytest.raises(ValueError, match="'stddev'"):
        I.RandomNormal(stddev=-1)
    with pytest.raises(ValueError, match="'mode'"):
        I.VarianceScaling(mode="fan_sideways")
    with pytest.raises(ValueError, match="Unknown initializer"):
        I.get("glorot")
