"""Optimizer tests ported from Keras 3 (``keras/src/optimizers/<name>_test.py``).

Each test names the Keras test it ports in its docstring. The golden values,
inputs and tolerances are Keras's. Where normlab has no equivalent of a Keras
private helper (``_clip_gradients``) the same property is checked through a
public step; such places say so.
"""

import json

import numpy as np
import pytest

from normlab import optimizers as O
from normlab._validation import InvalidParameterError

GRADS = np.arange(0.1, 1.1, 0.1)
FIRST = np.full((10,), 0.01)


def _golden_run(opt, golden, dtype=np.float64):
    """Keras's golden protocol: one step with 0.01, then check, step with 0.1..1.0, check, ..."""
    x = np.ones(10, dtype)
    opt.apply_gradients(zip([FIRST.astype(dtype)], [x]))
    for row in golden:
        np.testing.assert_allclose(x, row, rtol=5e-4, atol=5e-4)
        opt.apply_gradients(zip([GRADS.astype(dtype)], [x]))


def _single_step(opt):
    v = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    opt.apply_gradients(zip([np.array([1.0, 6.0, 7.0, 2.0], np.float32)], [v]))
    return v


def _weight_decay_case(cls):
    """Keras's test_weight_decay: zero gradient, lr 1, weight_decay 0.004 on scalar variables."""
    var1, var2, var3 = (np.array(2.0, np.float32) for _ in range(3))
    zero = np.zeros((), np.float32)
    cls(learning_rate=1.0, weight_decay=0.004).apply_gradients(zip([zero], [var1]))

    opt2 = cls(learning_rate=1.0, weight_decay=0.004)
    opt2.exclude_from_weight_decay(var_names=["exclude"])
    # normlab's arrays carry no name: the names travel with apply (a model passes its parameter names)
    opt2.apply([zero, zero], [var1, var2], names=["var1", "exclude"])

    opt3 = cls(learning_rate=1.0, weight_decay=0.004)
    opt3.exclude_from_weight_decay(var_list=[var3])
    opt3.apply_gradients(zip([zero, zero], [var1, var3]))
    # var1 is decayed once by each of the three optimizers: 2 * (1 - 0.004)^3
    assert float(var1) == pytest.approx(1.9760959, abs=1e-6)
    assert float(var2) == pytest.approx(2.0, abs=1e-6)
    assert float(var3) == pytest.approx(2.0, abs=1e-6)


def _serialization_round_trip(opt):
    """Keras's run_class_serialization_test: config -> JSON -> from_config -> same config."""
    cfg = opt.get_config()
    clone = type(opt).from_config(json.loads(json.dumps(cfg)))
    assert clone.get_config() == cfg


ALL = [O.SGD, O.Adam, O.AdamW, O.RMSprop, O.Adagrad, O.Nadam, O.Lion]


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize("cls, kwargs", [
    pytest.param(O.SGD, dict(learning_rate=0.5, momentum=0.06, nesterov=True, weight_decay=0.004),
                 id="SGDTest.test_config"),
    pytest.param(O.Adam, dict(learning_rate=0.5, beta_1=0.5, beta_2=0.67, epsilon=1e-5, amsgrad=True),
                 id="AdamTest.test_config"),
    pytest.param(O.AdamW, dict(learning_rate=0.5, weight_decay=0.008, beta_1=0.5, beta_2=0.67, epsilon=1e-5,
                               amsgrad=True), id="AdamWTest.test_config"),
    pytest.param(O.RMSprop, dict(learning_rate=0.5, rho=0.8, momentum=0.05, epsilon=1e-6, centered=True),
                 id="RMSpropTest.test_config"),
    pytest.param(O.Adagrad, dict(learning_rate=0.5, initial_accumulator_value=0.2, epsilon=1e-5),
                 id="AdagradTest.test_config"),
    pytest.param(O.Nadam, dict(learning_rate=0.5, beta_1=0.5, beta_2=0.67, epsilon=1e-5),
                 id="NadamTest.test_config"),
    pytest.param(O.Lion, dict(learning_rate=0.5, beta_1=0.5, beta_2=0.67), id="LionTest.test_config"),
])
def test_config(cls, kwargs):
    """Keras: <Optimizer>Test.test_config (one case per optimizer, see the ids)."""
    opt = cls(**kwargs)
    cfg = opt.get_config()
    for k, v in kwargs.items():
        assert cfg[k] == v
    _serialization_round_trip(opt)


# -------------------------------------------------------------- single step
@pytest.mark.parametrize("cls, expected", [
    pytest.param(O.Adam, [0.5, 1.5, 2.5, 3.5], id="AdamTest.test_single_step"),
    pytest.param(O.AdamW, [0.4980, 1.4960, 2.494, 3.492], id="AdamWTest.test_single_step"),
    pytest.param(O.RMSprop, [-0.5811, 0.4189, 1.4189, 2.4189], id="RMSpropTest.test_single_step"),
    pytest.param(O.Adagrad, [0.5233, 1.5007, 2.5005, 3.5061], id="AdagradTest.test_single_step"),
    pytest.param(O.Nadam, [0.4686, 1.4686, 2.4686, 3.4686], id="NadamTest.test_single_step"),
    pytest.param(O.Lion, [0.5, 1.5, 2.5, 3.5], id="LionTest.test_single_step"),
])
def test_single_step(cls, expected):
    """Keras: <Optimizer>Test.test_single_step (lr 0.5, one step)."""
    np.testing.assert_allclose(_single_step(cls(learning_rate=0.5)), expected, rtol=1e-4, atol=1e-4)


def test_sgd_single_step():
    """Keras: SGDTest.test_single_step.

    Keras also counts ``optimizer.variables`` (iterations and the learning
    rate); normlab keeps the counters in its state, so the step count and the
    learning rate are checked through ``iterations`` and ``learning_rate``.
    """
    opt = O.SGD(learning_rate=0.5)
    v = _single_step(opt)
    np.testing.assert_allclose(v, [0.5, -1.0, -0.5, 3.0], rtol=1e-4, atol=1e-4)
    assert opt.iterations == 1
    assert opt.learning_rate == 0.5


# ------------------------------------------------------------ weight decay
@pytest.mark.parametrize("cls", ALL, ids=lambda c: f"{c.__name__}Test.test_weight_decay")
def test_weight_decay(cls):
    """Keras: <Optimizer>Test.test_weight_decay (exclusion by name and by array)."""
    _weight_decay_case(cls)


# ---------------------------------------------------------- golden values


def test_sgd_correctness_with_golden():
    """Keras: SGDTest.test_correctness_with_golden (nesterov=True, momentum 0: plain SGD at lr 0.01)."""
    golden = np.array(
        [[0.9999] * 10,
         [0.9989, 0.9979, 0.9969, 0.9959, 0.9949, 0.9939, 0.9929, 0.9919, 0.9909, 0.9899],
         [0.9979, 0.9959, 0.9939, 0.9919, 0.9899, 0.9879, 0.9859, 0.9839, 0.9819, 0.9799],
         [0.9969, 0.9939, 0.9909, 0.9879, 0.9849, 0.9819, 0.9789, 0.9759, 0.9729, 0.9699],
         [0.9959, 0.9919, 0.9879, 0.9839, 0.9799, 0.9759, 0.9719, 0.9679, 0.9639, 0.9599]])
    _golden_run(O.SGD(nesterov=True), golden)


def test_adam_correctness_with_golden():
    """Keras: AdamTest.test_correctness_with_golden (amsgrad=True, float32)."""
    golden = np.tile([[0.999], [0.9982], [0.9974], [0.9965], [0.9955]], (1, 10))
    _golden_run(O.Adam(amsgrad=True), golden, np.float32)


def test_adamw_correctness_with_golden():
    """Keras: AdamWTest.test_correctness_with_golden (lr 1, weight_decay 0.5, epsilon 2)."""
    golden = np.array(
        [[0.4998] * 10,
         [0.2486, 0.2475, 0.2463, 0.2451, 0.244, 0.2428, 0.2417, 0.2405, 0.2394, 0.2382],
         [0.1223, 0.1198, 0.1174, 0.1149, 0.1124, 0.11, 0.1075, 0.1051, 0.1027, 0.1003],
         [0.0586, 0.0549, 0.0512, 0.0475, 0.0439, 0.0402, 0.0366, 0.033, 0.0294, 0.0258],
         [0.0263, 0.0215, 0.0167, 0.012, 0.0073, 0.0026, -0.0021, -0.0067, -0.0113, -0.0159]])
    _golden_run(O.AdamW(learning_rate=1.0, weight_decay=0.5, epsilon=2), golden, np.float32)


def test_rmsprop_correctness_with_golden():
    """Keras: RMSpropTest.test_correctness_with_golden (centered=True)."""
    golden = np.tile([[0.9967], [0.9933], [0.9908], [0.9885], [0.9864]], (1, 10))
    _golden_run(O.RMSprop(centered=True), golden)


def test_adagrad_correctness_with_golden():
    """Keras: AdagradTest.test_correctness_with_golden (lr 0.2, initial accumulator 0.3, epsilon 1e-6)."""
    golden = np.array(
        [[0.9963] * 10,
         [0.9604, 0.9278, 0.9003, 0.8784, 0.8615, 0.8487, 0.8388, 0.8313, 0.8255, 0.8209],
         [0.9251, 0.8629, 0.8137, 0.7768, 0.7497, 0.7298, 0.7151, 0.704, 0.6956, 0.6891],
         [0.8903, 0.8012, 0.7342, 0.6862, 0.6521, 0.6277, 0.6099, 0.5967, 0.5867, 0.579],
         [0.856, 0.7422, 0.6604, 0.6037, 0.5644, 0.5367, 0.5168, 0.5021, 0.491, 0.4825]])
    _golden_run(O.Adagrad(learning_rate=0.2, initial_accumulator_value=0.3, epsilon=1e-6), golden)


def test_nadam_correctness_with_golden():
    """Keras: NadamTest.test_correctness_with_golden (lr 0.5, beta_1 0.5, beta_2 0.67, epsilon 1e-5)."""
    golden = np.array(
        [[0.4281] * 10,
         [-0.1738, -0.1731, -0.1726, -0.1723, -0.1721, -0.172, -0.1719, -0.1718, -0.1718, -0.1717],
         [-0.7115, -0.7103, -0.7096, -0.7092, -0.709, -0.7088, -0.7086, -0.7085, -0.7085, -0.7084],
         [-1.2335, -1.2322, -1.2313, -1.2309, -1.2306, -1.2304, -1.2302, -1.2301, -1.23, -1.2299],
         [-1.7492, -1.7478, -1.7469, -1.7464, -1.7461, -1.7459, -1.7457, -1.7456, -1.7455, -1.7454]])
    _golden_run(O.Nadam(learning_rate=0.5, beta_1=0.5, beta_2=0.67, epsilon=1e-5), golden, np.float32)


def test_lion_correctness_with_golden():
    """Keras: LionTest.test_correctness_with_golden (defaults: every step moves by lr = 1e-3)."""
    golden = np.tile([[0.999], [0.998], [0.997], [0.996], [0.995]], (1, 10))
    _golden_run(O.Lion(), golden)


# ----------------------------------------------------------------- clipping
@pytest.mark.parametrize("cls", ALL, ids=lambda c: f"{c.__name__}Test.test_clip_norm")
def test_clip_norm(cls):
    """Keras: <Optimizer>Test.test_clip_norm.

    Keras calls the private ``_clip_gradients``; normlab has no such method,
    so the clipped gradient is observed through a step: the optimizer with
    ``clipnorm=1`` on [100, 100] takes exactly the step of the same optimizer
    without clipping on [sqrt(2)/2, sqrt(2)/2].
    """
    big = np.array([100.0, 100.0])
    clipped = np.array([2**0.5 / 2, 2**0.5 / 2])
    a, b = np.ones(2), np.ones(2)
    cls(clipnorm=1).apply_gradients([(big, a)])
    cls().apply_gradients([(clipped, b)])
    np.testing.assert_allclose(a, b, rtol=1e-12)
    # and for SGD (lr 1) the step *is* the clipped gradient
    c = np.zeros(2)
    O.SGD(learning_rate=1.0, clipnorm=1).apply_gradients([(big, c)])
    np.testing.assert_allclose(-c, clipped)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: f"{c.__name__}Test.test_clip_value")
def test_clip_value(cls):
    """Keras: <Optimizer>Test.test_clip_value (observed through a step, as in test_clip_norm)."""
    big = np.array([100.0, 100.0])
    a, b = np.ones(2), np.ones(2)
    cls(clipvalue=1).apply_gradients([(big, a)])
    cls().apply_gradients([(np.array([1.0, 1.0]), b)])
    np.testing.assert_allclose(a, b, rtol=1e-12)
    c = np.zeros(2)
    O.SGD(learning_rate=1.0, clipvalue=1).apply_gradients([(big, c)])
    np.testing.assert_allclose(-c, [1.0, 1.0])


# --------------------------------------------------------------- validation
@pytest.mark.parametrize("momentum", [-1.0, 2.0])
def test_sgd_invalid_momentum(momentum):
    """Keras: SGDTest.test_invalid_momentum.

    Keras raises ValueError("`momentum` must be a float between [0, 1]."); normlab
    raises InvalidParameterError (a ValueError) with its one message template.
    """
    with pytest.raises(ValueError, match=r"'momentum' parameter of SGD must be .*\[0, 1\]"):
        O.SGD(momentum=momentum)
    assert issubclass(InvalidParameterError, ValueError)


def test_adamw_weight_decay_is_none():
    """Keras: AdamWTest.test_weight_decay_is_none (weight_decay=None is refused)."""
    with pytest.raises(ValueError, match="'weight_decay' parameter of AdamW"):
        O.AdamW(learning_rate=1.0, weight_decay=None)


@pytest.mark.parametrize("beta_1", [-0.1, 0.0, 1.1])
def test_lion_invalid_beta_1(beta_1):
    """Keras: LionTest.test_invalid_beta_1 (beta_1 must lie in (0, 1]; 0 would make Lion SignSGD)."""
    with pytest.raises(ValueError, match=r"'beta_1' parameter of Lion must be .*\(0, 1\]"):
        O.Lion(beta_1=beta_1)


def test_nadam_build_with_empty_var_list():
    """Keras: NadamTest.test_build_with_empty_var_list (building with no parameters works)."""
    opt = O.Nadam()
    opt.build([])
    assert opt.iterations == 0


# --------------------------------------------------------------------- EMA
def test_adam_ema():
    """Keras: AdamTest.test_ema (the first step sets the average, the second updates it, finalize copies it)."""
    v = np.array([1.0, 2.0], np.float32)
    g = np.array([0.1, 0.2], np.float32)
    opt = O.Adam(learning_rate=1.0, use_ema=True, ema_momentum=0.9)
    opt.apply_gradients([(g, v)])
    v1 = v.copy()
    np.testing.assert_allclose(opt.get_state()["average/0"], v1)
    opt.apply_gradients([(g, v)])
    v2 = v.copy()
    expected = 0.9 * v1 + 0.1 * v2
    np.testing.assert_allclose(opt.get_state()["average/0"], expected, rtol=1e-6)
    opt.finalize_variable_values([v])
    np.testing.assert_allclose(v, expected, rtol=1e-6)


def test_adam_ema_overwrite_frequency():
    """Keras: AdamTest.test_ema_overwrite_frequency (the second step overwrites with the average)."""
    opt = O.Adam(learning_rate=1.0, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=2)
    ref = O.Adam(learning_rate=1.0)
    v = np.array([1.0, 2.0], np.float32)
    w = v.copy()
    g = np.array([0.1, 0.2], np.float32)
    opt.apply_gradients([(g, v)])
    ref.apply_gradients([(g, w)])
    v1 = w.copy()
    np.testing.assert_allclose(v, v1)
    opt.apply_gradients([(g, v)])
    ref.apply_gradients([(g, w)])
    expected = 0.9 * v1 + 0.1 * w
    np.testing.assert_allclose(v, expected, rtol=1e-6)
    np.testing.assert_allclose(opt.get_state()["average/0"], expected, rtol=1e-6)
