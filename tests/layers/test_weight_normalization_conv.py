"""WeightNormalization around convolutions: w = g v / ||v|| with the norm per filter."""

import json

import numpy as np
import pytest

from normlab.layers import Conv1D, Conv2D, WeightNormalization, deserialize, serialize
from normlab.testing import check_layer_gradients


@pytest.mark.parametrize(
    "inner,shape",
    [
        (lambda: Conv2D(4, 3, activation="tanh"), (3, 6, 6, 2)),
        (lambda: Conv2D(3, (2, 3), strides=2, padding="same"), (2, 7, 5, 2)),
        (lambda: Conv2D(2, 3, dilation_rate=2, use_bias=False), (2, 7, 7, 1)),
        (lambda: Conv1D(3, 2, activation="elu"), (4, 7, 2)),
    ],
)
def test_gradients(inner, shape, rng):
    layer = WeightNormalization(inner(), data_init=False)
    errs = check_layer_gradients(layer, rng.standard_normal(shape))
    assert max(errs.values()) < 1e-6, errs


def test_effective_kernel_and_norm_per_filter(rng):
    layer = WeightNormalization(Conv2D(4, 3), data_init=False)
    x = rng.standard_normal((2, 5, 5, 3))
    layer(x)
    v, g = layer.params["v"], layer.params["g"]
    w = layer.kernel
    np.testing.assert_allclose(np.sqrt((w**2).sum(axis=(0, 1, 2))), np.abs(g), rtol=1e-10)
    np.testing.assert_allclose(w, g * v / np.sqrt((v**2).sum(axis=(0, 1, 2))), rtol=1e-12)
    # initially the wrapped layer's kernel
    np.testing.assert_allclose(w, layer.layer.params["kernel"], rtol=1e-12)


def test_data_dependent_init_per_filter(rng):
    layer = WeightNormalization(Conv2D(4, 3))
    y = layer(rng.standard_normal((8, 7, 7, 3)) * 3 + 1, training=True)
    z = y.reshape(-1, 4)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(z.std(0), 1, rtol=1e-8)


def test_config_round_trip():
    layer = WeightNormalization(Conv2D(4, 3, strides=2, padding="same"), data_init=False)
    clone = deserialize(json.loads(json.dumps(serialize(layer))))
    assert clone.get_config() == layer.get_config()
    assert type(clone.layer) is Conv2D and clone.layer.strides == (2, 2)
