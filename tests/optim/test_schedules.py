"""Learning-rate schedules: formulas by hand, Keras's examples, the notes' linear decay, configs."""

import json
import math

import numpy as np
import pytest

from normlab import optimizers as O
from normlab._validation import InvalidParameterError, _as_constraint
from normlab.optimizers import schedules as S

STEPS = [0, 1, 2, 5, 9, 10, 11, 37, 100, 1000]


def test_exponential_decay():
    s = S.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    for k in STEPS:
        assert s(k) == pytest.approx(0.1 * 0.5 ** (k / 10), rel=1e-15)
    st = S.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    assert [st(k) for k in (0, 9, 10, 19, 20)] == [0.1, 0.1, 0.05, 0.05, 0.025]
    keras = S.ExponentialDecay(0.1, decay_steps=100000, decay_rate=0.96, staircase=True)  # Keras's docstring
    assert keras(250000) == pytest.approx(0.1 * 0.96**2, rel=1e-15)


def test_piecewise_constant_keras_boundaries():
    s = S.PiecewiseConstantDecay([100000, 110000], [1.0, 0.5, 0.1])
    assert [s(k) for k in (0, 100000, 100001, 110000, 110001, 10**7)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    with pytest.raises(ValueError, match="one more entry"):
        S.PiecewiseConstantDecay([1, 2], [1.0, 0.5])
    with pytest.raises(ValueError, match="increase strictly"):
        S.PiecewiseConstantDecay([5, 5], [1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="learning rates >= 0"):
        S.PiecewiseConstantDecay([5], [1.0, -0.5])


def test_polynomial_decay_power_one_is_the_notes_linear_decay():
    a0, tau = 0.1, 50
    a_tau = 0.01 * a0  # the notes' rule of thumb
    s = S.PolynomialDecay(a0, tau, a_tau, power=1.0)
    for k in range(0, 120):
        notes = a0 - (k / tau) * (a0 - a_tau) if k <= tau else a_tau
        assert s(k) == pytest.approx(notes, rel=1e-14, abs=1e-18)
    assert s(tau) == pytest.approx(a_tau, rel=1e-15) and s(10 * tau) == a_tau


def test_polynomial_decay_power_and_cycle():
    s = S.PolynomialDecay(0.1, 10, 0.01, power=0.5)
    for k in STEPS:
        p = min(k, 10) / 10
        assert s(k) == pytest.approx((0.1 - 0.01) * (1 - p) ** 0.5 + 0.01, rel=1e-15)
    c = S.PolynomialDecay(0.1, 10, 0.0, power=1.0, cycle=True)
    assert c(0) == 0.1 and c(10) == pytest.approx(0.0, abs=1e-18)
    assert c(11) == pytest.approx(0.1 * (1 - 11 / 20), rel=1e-15)  # horizon 20
    assert c(25) == pytest.approx(0.1 * (1 - 25 / 30), rel=1e-15)


def test_inverse_time_decay():
    s = S.InverseTimeDecay(0.1, 1.0, 0.5)
    for k in STEPS:
        assert s(k) == pytest.approx(0.1 / (1 + 0.5 * k), rel=1e-15)
    st = S.InverseTimeDecay(0.1, 4, 0.5, staircase=True)
    assert [st(k) for k in (0, 3, 4, 8)] == pytest.approx([0.1, 0.1, 0.1 / 1.5, 0.1 / 2.0], rel=1e-15)


def test_cosine_decay_and_warmup():
    s = S.CosineDecay(0.1, 100, alpha=0.1)
    for k in STEPS:
        c = 0.5 * (1 + math.cos(math.pi * min(k, 100) / 100))
        assert s(k) == pytest.approx(0.1 * (0.9 * c + 0.1), rel=1e-14)
    w = S.CosineDecay(0.0, 100, alpha=0.0, warmup_target=0.2, warmup_steps=20)
    assert w(0) == 0.0 and w(10) == pytest.approx(0.1, rel=1e-15) and w(19) == pytest.approx(0.19, rel=1e-14)
    assert w(20) == pytest.approx(0.2, rel=1e-15)  # peak: warm-up done, decay starts
    assert w(70) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 0.5)), rel=1e-14, abs=1e-17)
    assert w(120) == pytest.approx(0.0, abs=1e-17) and w(500) == pytest.approx(0.0, abs=1e-17)
    rising = [w(k) for k in range(21)]
    assert all(b > a for a, b in zip(rising, rising[1:]))


def _sgdr_reference(step, lr0, first, t_mul, m_mul, alpha):
    """Walk the periods one by one."""
    start, length, i = 0.0, float(first), 0
    while step >= start + length:
        start += length
        length *= t_mul
        i += 1
    frac = (step - start) / length
    return lr0 * ((1 - alpha) * m_mul**i * 0.5 * (1 + math.cos(math.pi * frac)) + alpha)


@pytest.mark.parametrize("t_mul,m_mul,alpha", [(2.0, 1.0, 0.0), (2.0, 0.5, 0.1), (1.0, 0.8, 0.0), (1.5, 0.9, 0.05), (3.0, 1.0, 0.0)])
def test_cosine_decay_restarts(t_mul, m_mul, alpha):
    s = S.CosineDecayRestarts(0.1, 10, t_mul=t_mul, m_mul=m_mul, alpha=alpha)
    for k in range(0, 400):
        assert s(k) == pytest.approx(_sgdr_reference(k, 0.1, 10, t_mul, m_mul, alpha), rel=1e-12, abs=1e-15), k
    # restarts happen exactly at the period boundaries 10, 30, 70 (t_mul=2)
    if t_mul == 2.0:
        for b in (10, 30, 70, 150):
            assert s(b) > s(b - 1)


def test_serialization_and_get():
    items = [
        S.ExponentialDecay(0.1, 10, 0.9, staircase=True),
        S.PiecewiseConstantDecay([5, 10], [0.1, 0.01, 0.001]),
        S.PolynomialDecay(0.1, 10, 0.001, power=2.0, cycle=True),
        S.InverseTimeDecay(0.1, 5, 0.5),
        S.CosineDecay(0.0, 100, alpha=0.01, warmup_target=0.1, warmup_steps=10),
        S.CosineDecayRestarts(0.1, 10, t_mul=1.5, m_mul=0.5, alpha=0.1),
    ]
    for s in items:
        cfg = json.loads(json.dumps(S.serialize(s)))
        back = S.deserialize(cfg)
        assert back == s and type(back) is type(s)
        assert [back(k) for k in STEPS] == [s(k) for k in STEPS]
        assert S.get(cfg) == s and S.get(s) is s and S.get(None) is None
        assert repr(s).startswith(type(s).__name__ + "(")
    with pytest.raises(ValueError, match="Unknown learning rate schedule"):
        S.deserialize({"class_name": "NoSuchDecay", "config": {}})


def test_negative_step_rejected():
    with pytest.raises(ValueError, match="step >= 0"):
        S.ExponentialDecay(0.1, 10, 0.5)(-1)


def _invalid_cases():
    required = {
        "ExponentialDecay": dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5),
        "PiecewiseConstantDecay": dict(boundaries=[1], values=[0.1, 0.01]),
        "PolynomialDecay": dict(initial_learning_rate=0.1, decay_steps=10),
        "InverseTimeDecay": dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5),
        "CosineDecay": dict(initial_learning_rate=0.1, decay_steps=10),
        "CosineDecayRestarts": dict(initial_learning_rate=0.1, first_decay_steps=10),
    }
    for name in sorted(set(S.registry._classes)):
        cls = S.registry._classes[name]
        for pname, allowed in cls._param_constraints.items():
            cs = [_as_constraint(c) for c in allowed]
            for bad in [v for c in cs for v in c.invalid_examples()]:
                if not any(c.is_satisfied_by(bad) for c in cs):
                    yield pytest.param(cls, required[name], pname, bad, id=f"{name}-{pname}-{bad!r}")


@pytest.mark.parametrize("cls,required,pname,bad", list(_invalid_cases()))
def test_declared_constraints_reject_invalid_values(cls, required, pname, bad):
    with pytest.raises(InvalidParameterError) as e:
        cls(**{**required, pname: bad})
    assert str(e.value).startswith(f"The {pname!r} parameter of {cls.__name__} must be ")
    assert str(e.value).endswith(f"Got {bad!r} instead.")


def test_decay_steps_zero_message():
    with pytest.raises(InvalidParameterError) as e:
        S.ExponentialDecay(0.1, 0, 0.5)
    assert str(e.value) == (
        "The 'decay_steps' parameter of ExponentialDecay must be a float in the range (0, inf). Got 0 instead."
    )


def test_optimizer_evaluates_the_schedule_at_iterations_and_resumes_on_the_curve():
    s = S.PiecewiseConstantDecay([1, 3], [1.0, 0.1, 0.01])
    opt = O.SGD(s)
    w = np.zeros(1)
    seen = []
    for _ in range(5):
        seen.append(opt.current_learning_rate)
        opt.apply([np.ones(1)], [w])
    assert seen == [1.0, 1.0, 0.1, 0.1, 0.01]
    np.testing.assert_allclose(w, [-(1.0 + 1.0 + 0.1 + 0.1 + 0.01)], rtol=1e-15)
    back = O.deserialize(json.loads(json.dumps(O.serialize(opt))))
    back.set_state(opt.get_state())
    assert back.current_learning_rate == 0.01 and back.iterations == 5
