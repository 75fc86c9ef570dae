"""Lion: Keras 3's values (keras/src/optimizers/lion_test.py), the rule by hand, both paths."""

import json

import numpy as np
import pytest

import normlab
from normlab import optimizers as O
from normlab._validation import InvalidParameterError
from normlab.kernels import _backend
from normlab.layers import Dense



def test_keras_defaults_and_config_round_trip():
    opt = O.get("lion")
    assert isinstance(opt, O.Lion)
    cfg = opt.get_config()
    assert (cfg["learning_rate"], cfg["beta_1"], cfg["beta_2"], cfg["weight_decay"]) == (0.001, 0.9, 0.99, None)
    custom = O.Lion(learning_rate=0.5, beta_1=0.5, beta_2=0.67)
    back = O.deserialize(json.loads(json.dumps(O.serialize(custom))))
    assert type(back) is O.Lion and back.get_config() == custom.get_config()


@pytest.mark.parametrize("beta_1", [-0.1, 0.0, 1.1])
def test_beta_1_must_be_in_0_1_excluding_0(beta_1):
    with pytest.raises(InvalidParameterError, match=r"'beta_1' parameter of Lion must be .* range \(0, 1\]"):
        O.Lion(beta_1=beta_1)
    O.Lion(beta_1=1.0)


def test_single_step(numba_path):
    w = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    O.Lion(learning_rate=0.5).apply_gradients(zip([np.array([1.0, 6.0, 7.0, 2.0], np.float32)], [w]))
    np.testing.assert_allclose(w, [0.5, 1.5, 2.5, 3.5], rtol=1e-4, atol=1e-4)


def test_weight_decay_with_zero_gradient(numba_path):
    # Keras applies three optimizers with weight_decay=0.004 and lr=1 to var1 in turn
    w = np.array([2.0], np.float32)
    for _ in range(3):
        O.Lion(learning_rate=1.0, weight_decay=0.004).apply([np.zeros(1, np.float32)], [w])
    assert w[0] == pytest.approx(1.9760959, abs=1e-6)


def test_correctness_with_golden(numba_path):
    opt = O.Lion()
    x = np.ones(10)
    grads = np.arange(0.1, 1.1, 0.1)
    opt.apply_gradients(zip([np.full(10, 0.01)], [x]))
    golden = np.tile([[0.999], [0.998], [0.997], [0.996], [0.995]], (1, 10))
    for i in range(5):
        np.testing.assert_allclose(x, golden[i], rtol=5e-4, atol=5e-4)
        opt.apply_gradients(zip([grads], [x]))


def test_clipping_happens_before_the_momentum():
    # Keras's test_clip_norm / test_clip_value check the clipped gradient; here it is seen in the momentum
    for kwargs, clipped in (({"clipnorm": 1}, [2**0.5 / 2, 2**0.5 / 2]), ({"clipvalue": 1}, [1.0, 1.0])):
        opt = O.Lion(**kwargs)
        opt.apply([np.array([100.0, 100.0])], [np.zeros(2)])
        np.testing.assert_allclose(opt.get_state()["momentum/0"], np.multiply(clipped, 1 - 0.99), rtol=1e-12)


def test_the_rule_by_hand_float64():
    rng = np.random.default_rng(0)
    w0 = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    opt = O.Lion(learning_rate=0.02, beta_1=0.8, beta_2=0.95, weight_decay=0.1)
    w = [a.copy() for a in w0]
    ref = [a.copy() for a in w0]
    m = [np.zeros_like(a) for a in w0]
    for _ in range(5):
        g = [rng.standard_normal(a.shape) for a in w0]
        opt.apply(g, w)
        for i in range(2):
            ref[i] = ref[i] - 0.02 * 0.1 * ref[i] - 0.02 * np.sign(0.8 * m[i] + 0.2 * g[i])
            m[i] = 0.95 * m[i] + (1 - 0.95) * g[i]
    for a, b in zip(w, ref):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_allclose(opt.get_state()["momentum/1"], m[1], rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_and_chain_paths_agree_bit_for_bit(dtype):
    def trajectory():
        rng = np.random.default_rng(2)
        opt = O.Lion(learning_rate=0.01)
        params, grads = opt.bind([rng.standard_normal(s).astype(dtype) for s in ((4, 3), (7,))])
        fused = opt._binding.fused is not None
        for _ in range(6):
            for g in grads:
                g[...] = rng.standard_normal(g.shape) * 2
            opt.step()
        return [p.copy() for p in params], opt.get_state(), fused

    out = {}
    for use in ([False, True] if _backend.NUMBA_AVAILABLE else [False]):
        previous = _backend.use_numba(use)
        try:
            out[use] = trajectory()
        finally:
            _backend.use_numba(previous)
    assert all(fused for _, _, fused in out.values())  # one rule, the learning rate: fused on either path
    if len(out) == 2:
        for a, b in zip(out[True][0], out[False][0]):
            np.testing.assert_array_equal(a, b)
        for k in out[False][1]:
            np.testing.assert_array_equal(out[True][1][k], out[False][1][k])


def test_a_model_compiled_with_a_chain_trains_as_with_the_named_optimizer():
    from normlab.optim import transforms as T

    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    weights = {}
    for label, opt in (("named", O.Lion(learning_rate=0.001)),
                       ("chain", T.chain(T.scale_by_lion(), T.scale_by_learning_rate()))):
        model = normlab.Sequential([Dense(4, activation="relu"), Dense(2, activation="softmax")])
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        model.build((None, 5), seed=0)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=0)
        weights[label] = model.get_weights()
        assert model.optimizer.iterations == 8
    for a, b in zip(weights["named"], weights["chain"]):
        np.testing.assert_array_equal(a, b)
