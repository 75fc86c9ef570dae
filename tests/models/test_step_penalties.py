"""The training step's weight penalties (models._model_compile._penalty_plan): the same bits as the layers' own methods."""

import numpy as np
import pytest

import normlab
from normlab import layers as L
from normlab import regularizers as R


def _model(kernel_regs, frozen=None):
    layers = [L.Dense(8, activation="relu", kernel_regularizer=kernel_regs[0], bias_regularizer=R.L2(1e-2)),
              L.BatchNormalization(),
              L.Dense(6, activation="tanh", kernel_regularizer=kernel_regs[1]),
              L.Dense(3, activation="softmax", kernel_regularizer=kernel_regs[2])]
    model = normlab.Sequential(layers)
    model.build((None, 5), seed=0)
    if frozen is not None:
        model.layers[frozen].trainable = False
    model.compile(normlab.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model._prepare_training()  # what fit does first: the plan is made there
    return model


def _fit(model, general: bool):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model._prepare_training()
    if general:
        model._penalties = None  # the layers' own regularization_loss / add_regularization_grads
    hist = model.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=2)
    return hist.history["loss"], model.get_weights()


@pytest.mark.parametrize("frozen", [None, 2])
@pytest.mark.parametrize("regs", [
    (R.L2(1e-3), R.L2(0.0), "l2"),
    (R.L1L2(1e-3, 2e-3), R.L1(1e-3), None),
])
def test_the_step_penalties_give_the_layers_bits(regs, frozen):
    plan = _model(regs, frozen)
    assert plan._penalties is not None
    loss_a, w_a = _fit(plan, general=False)
    loss_b, w_b = _fit(_model(regs, frozen), general=True)
    assert loss_a == loss_b
    for a, b in zip(w_a, w_b):
        np.testing.assert_array_equal(a, b)


def test_a_coefficient_changed_after_compile_is_followed():
    regs = (R.L2(1e-3), R.L2(1e-3), R.L2(1e-3))
    a, b = _model(regs), _model((R.L2(1e-3), R.L2(1e-3), R.L2(1e-3)))
    for m in (a, b):
        m._prepare_training()
        m.layers[0].kernel_regularizer.l1 = 1e-2  # now an L1L2 with both terms
    loss_a, w_a = _fit(a, general=False)
    loss_b, w_b = _fit(b, general=True)
    assert loss_a == loss_b


def test_another_regularizer_takes_the_general_path():
    class Half(R.L2):
        def penalty(self, w):
            return 0.5 * super().penalty(w)

    model = _model((Half(1e-3), None, None))
    model._prepare_training()
    assert model._penalties is None
    plain = normlab.Sequential([L.Dense(2)])
    plain.build((None, 3), seed=0)
    plain.compile("sgd", "mse")
    plain._prepare_training()
    assert plain._penalties is None  # no penalty at all: nothing to plan
