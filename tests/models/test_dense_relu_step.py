"""A training step's fused Dense + ReLU passes, the L2 gradient in one pass and the optimizer's kept
learning-rate values: the same run, bit for bit, as the plain NumPy calls; a new rate takes effect."""

import numpy as np
import pytest

import normlab
from normlab import layers, optimizers, regularizers
from normlab.kernels import _backend, dense
from normlab.kernels import optim as K_optim

pytestmark = pytest.mark.skipif(not _backend.numba_enabled(),
                                reason="the numba kernels are not installed or are switched off (NORMLAB_DISABLE_NUMBA)")


def _model(dtype="float32", lr=1e-2):
    m = normlab.Sequential([
        layers.Dense(16, activation="relu", kernel_regularizer=regularizers.L2(1e-3), dtype=dtype),
        layers.Dense(12, activation="relu", dtype=dtype),
        layers.Dense(3, activation="softmax", kernel_regularizer=regularizers.L2(1e-3), dtype=dtype),
    ])
    m.compile(optimizer=optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    m.build((None, 8), seed=3)
    return m


def _run(dtype, steps=6, lr_change=None):
    rng = np.random.default_rng(0)
    m = _model(dtype)
    losses = []
    for k in range(steps):
        if lr_change is not None and k == lr_change[0]:
            m.optimizer.learning_rate = lr_change[1]
        x = rng.standard_normal((20, 8)).astype(dtype)
        y = rng.integers(0, 3, 20)
        losses.append(m.train_on_batch(x, y))
    return losses, [w.copy() for w in m.get_weights()]


def _same(a, b):
    la, wa = a
    lb, wb = b
    assert la == lb
    for p, q in zip(wa, wb):
        assert p.dtype == q.dtype and np.array_equal(p.view(np.uint8), q.view(np.uint8))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_relu_and_l2_passes_give_the_plain_bits(dtype, monkeypatch):
    fused = _run(dtype)
    with monkeypatch.context() as mp:
        mp.setattr(dense, "fused_size", lambda shape, dt: 0)
        mp.setattr(K_optim, "add_scaled", lambda g, w, c: False)
        mp.setattr(dense, "_nb", None)  # the bias gradient by np.add.reduce
        plain = _run(dtype)
    _same(fused, plain)


def test_fused_path_is_taken():
    m = _model()
    x = np.random.default_rng(1).standard_normal((20, 8)).astype("float32")
    m.train_on_batch(x, np.zeros(20, int))
    first = m.layers[0]
    ws = first._ws
    assert ws[4] == 1 and ws[2] is not None and ws[3] is not None
    assert first._cache.a is ws[2]


def test_learning_rate_set_after_steps_takes_effect():
    # the fused optimizer keeps what depends on the rate; a new rate set by hand must be used at
    # the next step, the same bits as a schedule giving that rate from that step
    by_hand = _run("float32", lr_change=(3, 0.05))
    rng = np.random.default_rng(0)
    m = _model(lr=lambda step: 1e-2 if step < 3 else 0.05)
    losses = []
    for _ in range(6):
        x = rng.standard_normal((20, 8)).astype("float32")
        losses.append(m.train_on_batch(x, rng.integers(0, 3, 20)))
    _same(by_hand, (losses, m.get_weights()))
    unchanged = _run("float32")
    assert unchanged[0][:3] == by_hand[0][:3]
    assert not np.array_equal(unchanged[1][0], by_hand[1][0])
