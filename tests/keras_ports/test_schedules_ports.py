"""Keras 3.15's learning-rate schedule tests, ported to normlab.

Source: ``keras/src/optimizers/schedules/learning_rate_schedule_test.py``
(keras-team/keras). Each test names the Keras test it ports as
``<TestCase>.<test>``. Keras compares with ``assertAllClose(a, b, 1e-6)``
(an absolute tolerance of 1e-6, relative 1e-6): the ports keep it.
Keras's ``backend.Variable`` steps become plain numbers: normlab's
schedules take the step count as an int or float.
"""

import json
import math

import numpy as np
import pytest

import normlab
from normlab.optim import schedules


def close(actual, expected, atol=1e-6, rtol=1e-6):
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


def roundtrip(schedule):
    """Keras's ``run_class_serialization_test``: config and serialized form round-trip (through JSON)."""
    config = schedule.get_config()
    clone = type(schedule).from_config(config)
    assert clone.get_config() == config
    revived = schedules.deserialize(json.loads(json.dumps(schedules.serialize(schedule))))
    assert type(revived) is type(schedule)
    assert revived.get_config() == config
    for step in (0, 1, 7, 25, 1000):
        assert revived(step) == schedule(step)


def test_fit_lr_correctness():
    """TestFitLRSchedulesFlow.test_fit_lr_correctness: Adam with ExponentialDecay, three epochs of MSE."""
    model = normlab.Sequential([normlab.layers.Dense(2, kernel_initializer="ones", bias_initializer="ones")])
    optimizer = normlab.optimizers.Adam(
        learning_rate=schedules.ExponentialDecay(initial_learning_rate=0.05, decay_steps=1, decay_rate=0.9))
    model.compile(optimizer=optimizer, loss="mse")
    x = np.arange(32, dtype=np.float32).reshape((16, 2))
    y = np.arange(32, dtype=np.float32).reshape((16, 2))
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0)
    assert optimizer.iterations == 4 * 3
    close(history.history["loss"], [230.79457092285156, 128.30319213867188, 79.33648681640625],
          atol=1e-6, rtol=5e-5)


# ExponentialDecay -------------------------------------------------------------
def test_exponential_decay_config():
    """ExponentialDecayTest.test_config."""
    roundtrip(schedules.ExponentialDecay(initial_learning_rate=0.05, decay_steps=10, decay_rate=0.96,
                                         staircase=True, name="my_ed"))


def test_exponential_decay_continuous():
    """ExponentialDecayTest.test_continuous."""
    close(schedules.ExponentialDecay(0.05, 10, 0.96)(5), 0.05 * 0.96 ** (5.0 / 10.0))


@pytest.mark.parametrize("keras_test", ["test_staircase", "test_variables"])
def test_exponential_decay_staircase(keras_test):
    """ExponentialDecayTest.test_staircase and ExponentialDecayTest.test_variables (the same values)."""
    decayed_lr = schedules.ExponentialDecay(0.1, 3, 0.96, staircase=True)
    close(decayed_lr(1.0), 0.1)
    close(decayed_lr(2), 0.1)
    close(decayed_lr(100), 0.1 * 0.96 ** (100 // 3))


# PiecewiseConstantDecay -------------------------------------------------------
def test_piecewise_constant_decay_config():
    """PiecewiseConstantDecayTest.test_config."""
    roundtrip(schedules.PiecewiseConstantDecay(boundaries=[10, 20], values=[1, 2, 3], name="my_pcd"))


def test_piecewise_values():
    """PiecewiseConstantDecayTest.test_piecewise_values.

    Keras starts at step -999.0 (value 1.0). normlab deliberately refuses a
    negative step (an optimizer's step count is never negative; the same
    check guards every schedule), so the port asserts the refusal there and
    Keras's values at every other step.
    """
    decayed_lr = schedules.PiecewiseConstantDecay([100, 110, 120], [1.0, 0.1, 0.01, 0.001])
    with pytest.raises(ValueError, match="step"):
        decayed_lr(-999.0)
    for step, expected in [(0, 1.0), (100, 1.0), (105, 0.1), (110, 0.1), (120, 0.01), (999, 0.001)]:
        close(decayed_lr(step), expected)


def test_piecewise_boundary_values():
    """PiecewiseConstantDecayTest.test_boundary_values (int64 steps)."""
    decayed_lr = schedules.PiecewiseConstantDecay([1, 2, 3], [0.4, 0.5, 0.6, 0.7])
    for step, expected in [(0, 0.4), (1, 0.4), (2, 0.5), (3, 0.6), (4, 0.7)]:
        close(decayed_lr(np.int64(step)), expected)


# PolynomialDecay (Keras's LinearDecayTest and SqrtDecayTest) -----------------------
def test_linear_decay_config():
    """LinearDecayTest.test_config."""
    roundtrip(schedules.PolynomialDecay(initial_learning_rate=0.1, decay_steps=100, end_learning_rate=0.005,
                                        power=1.0, cycle=False, name="my_ld"))


LR, END = 0.05, 0.001


@pytest.mark.parametrize("keras_test, step, end_lr, cycle, expected", [
    ("LinearDecayTest.test_halfway", 5, 0.0, False, LR * 0.5),
    ("LinearDecayTest.test_end", 10, END, False, END),
    ("LinearDecayTest.test_halfway_with_end", 5, END, False, (LR + END) * 0.5),
    ("LinearDecayTest.test_beyond_end", 15, END, False, END),
    ("LinearDecayTest.test_beyond_end_with_cycle", 15, END, True, (LR - END) * 0.25 + END),
])
def test_linear_decay(keras_test, step, end_lr, cycle, expected):
    """LinearDecayTest.* (power 1): one case per Keras test."""
    close(schedules.PolynomialDecay(LR, 10, end_lr, cycle=cycle)(step), expected)


@pytest.mark.parametrize("keras_test, step, end_lr, cycle, expected", [
    ("SqrtDecayTest.test_halfway", 5, 0.0, False, LR * 0.5 ** 0.5),
    ("SqrtDecayTest.test_end", 10, END, False, END),
    ("SqrtDecayTest.test_halfway_with_end", 5, END, False, (LR - END) * 0.5 ** 0.5 + END),
    ("SqrtDecayTest.test_beyond_end", 15, END, False, END),
    ("SqrtDecayTest.test_beyond_end_with_cycle", 15, END, True, (LR - END) * 0.25 ** 0.5 + END),
])
def test_sqrt_decay(keras_test, step, end_lr, cycle, expected):
    """SqrtDecayTest.* (power 0.5): one case per Keras test."""
    close(schedules.PolynomialDecay(LR, 10, end_lr, power=0.5, cycle=cycle)(step), expected)


def test_sqrt_decay_begin_with_cycle():
    """SqrtDecayTest.test_begin_with_cycle: step 0 with cycle=True is the initial rate (no 0/0)."""
    close(schedules.PolynomialDecay(0.001, 10, cycle=True)(0), 0.001)


# InverseTimeDecay -----------------------------------------------------------
def test_inverse_time_decay_config():
    """InverseTimeDecayTest.test_config."""
    roundtrip(schedules.InverseTimeDecay(initial_learning_rate=0.05, decay_steps=10, decay_rate=0.96,
                                         staircase=True, name="my_itd"))


def test_inverse_time_decay():
    """InverseTimeDecayTest.test_decay."""
    decayed_lr = schedules.InverseTimeDecay(0.1, 10, 0.96)
    for i in range(11):
        close(decayed_lr(float(i)), 0.1 / (1 + i / 10 * 0.96))


def test_inverse_time_decay_staircase():
    """InverseTimeDecayTest.test_staircase."""
    decayed_lr = schedules.InverseTimeDecay(0.1, 10, 0.96, staircase=True)
    for i in range(11):
        close(decayed_lr(float(i)), 0.1 / (1 + 0.96 * (i // 10)))


# CosineDecay ----------------------------------------------------------------
def reference_cosine(step, decay_steps, alpha=0.0):
    """The formula of Keras's test helper ``np_cosine_decay``, restated."""
    fraction = min(step, decay_steps) / decay_steps
    return (1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * fraction)) + alpha


def reference_warmup(step, warmup_steps, initial_lr, target_lr):
    """Keras's test helper ``linear_warmup`` (it leaves out ``initial_lr``: its tests use 0)."""
    return step / warmup_steps * (target_lr - initial_lr)


def test_cosine_decay_config():
    """CosineDecayTest.test_config."""
    roundtrip(schedules.CosineDecay(initial_learning_rate=0.05, decay_steps=10, alpha=0.1, warmup_target=0.2,
                                    warmup_steps=2, name="my_cd"))


@pytest.mark.parametrize("initial_lr", [1.0, np.float64(1.0)], ids=["test_decay", "test_float64"])
def test_cosine_decay(initial_lr):
    """CosineDecayTest.test_decay and CosineDecayTest.test_float64."""
    for step in range(0, 1500, 250):
        close(schedules.CosineDecay(initial_lr, 1000)(step), reference_cosine(step, 1000))


def test_cosine_decay_warmup():
    """CosineDecayTest.test_warmup."""
    for step in range(0, 1500, 250):
        lr = schedules.CosineDecay(0.0, 10, warmup_target=10.0, warmup_steps=1500)
        close(lr(step), reference_warmup(step, 1500, 0.0, 10.0))


def test_cosine_decay_alpha():
    """CosineDecayTest.test_alpha."""
    for step in range(0, 1500, 250):
        close(schedules.CosineDecay(1.0, 1000, 0.1)(step), reference_cosine(step, 1000, 0.1))


def test_cosine_decay_warmup_decay():
    """CosineDecayTest.test_warmup_decay."""
    for step in range(0, 3000, 250):
        lr = schedules.CosineDecay(0.0, 1000, warmup_target=10.0, warmup_steps=2000)
        if step < 2000 + 1:
            expected = reference_warmup(step, 2000, 0.0, 10.0)
        else:
            expected = 10.0 * reference_cosine(step - 2000, 1000)
        close(lr(step), expected)


# CosineDecayRestarts ----------------------------------------------------------
def reference_restarts(step, decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    """Keras's test helper ``np_cosine_decay_restarts``, restated: walk the periods."""
    factor = 1.0
    while step >= decay_steps:
        step -= decay_steps
        decay_steps *= t_mul
        factor *= m_mul
    decay = factor * 0.5 * (1.0 + math.cos(math.pi * step / decay_steps))
    return (1.0 - alpha) * decay + alpha


def test_cosine_decay_restarts_config():
    """CosineDecayRestartsTest.test_config."""
    roundtrip(schedules.CosineDecayRestarts(initial_learning_rate=0.05, first_decay_steps=10, alpha=0.1,
                                            t_mul=3.0, m_mul=4.0, name="my_cdr"))


@pytest.mark.parametrize("keras_test, initial_lr, kwargs", [
    ("test_decay", 1.0, {}),
    ("test_float64", np.float64(1.0), {}),
    ("test_alpha", 1.0, {"alpha": 0.1}),
    ("test_mmul", 1.0, {"m_mul": 0.9}),
    ("test_tmul", 1.0, {"t_mul": 1.0}),
])
def test_cosine_decay_restarts(keras_test, initial_lr, kwargs):
    """CosineDecayRestartsTest.test_decay / test_float64 / test_alpha / test_mmul / test_tmul."""
    for step in range(0, 1500, 250):
        decayed_lr = schedules.CosineDecayRestarts(initial_lr, 1000, **kwargs)
        close(decayed_lr(step), reference_restarts(step, 1000, **kwargs))
