"""normlab's stand-in for Keras's ``testing.TestCase.run_layer_test`` (keras/src/testing/test_case.py).

Keras's helper builds a layer, calls it eagerly and symbolically, counts its
weights, losses and seed generators, and round-trips its config. The
equivalent checks through normlab's API:

- ``layer.build(input_shape)`` marks the layer built and creates the weights
  Keras counts (``expected_num_trainable_weights`` /
  ``expected_num_non_trainable_weights``);
- an eager call gives ``expected_output_shape``, as does
  ``compute_output_shape`` and a symbolic call on ``normlab.Input``;
- ``expected_num_losses`` counts regularized weights (Keras's layer losses);
- ``get_config`` survives JSON and ``from_config`` (Keras's serialization test).

Keras's ``expected_num_seed_generators`` has no normlab counterpart (a
random layer owns one ``numpy.random.Generator``), and ``supports_masking``
is not checked: normlab has no masks (docs/keras.md).
"""

from __future__ import annotations

import json

import numpy as np

import normlab


def run_layer_test(cls, init_kwargs=None, input_shape=(2, 3), expected_output_shape=None,
                   expected_num_trainable_weights=None, expected_num_non_trainable_weights=None,
                   expected_num_losses=None, training=False, input_data=None, expected_output=None,
                   symbolic=True, atol=1e-6, rtol=1e-6):
    init_kwargs = dict(init_kwargs or {})
    # serialization
    layer = cls(**init_kwargs)
    cfg = layer.get_config()
    clone = cls.from_config(json.loads(json.dumps(cfg)))
    assert clone.get_config() == {**cfg, "name": clone.name} or clone.get_config() == cfg
    # build, then weights
    layer = cls(**init_kwargs)
    layer.build(tuple(input_shape) if input_data is None else input_data.shape)
    assert layer.built
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    if expected_num_losses is not None:
        assert len(layer._regularizers) == expected_num_losses
        if expected_num_losses:
            assert layer.regularization_loss() > 0
    # eager call
    x = (np.random.default_rng(0).normal(size=input_shape).astype(np.float32) if input_data is None
         else input_data)
    y = layer(x, training=training)
    if expected_output_shape is not None:
        assert y.shape == tuple(expected_output_shape)
        assert tuple(layer.compute_output_shape(tuple(x.shape))) == tuple(expected_output_shape)
    if expected_output is not None:
        np.testing.assert_allclose(y, expected_output, atol=atol, rtol=rtol)
    # symbolic call on an Input (batch axis open)
    if symbolic and expected_output_shape is not None:
        sym = cls(**init_kwargs)(normlab.Input(shape=tuple(x.shape[1:])))
        assert tuple(sym.shape)[1:] == tuple(expected_output_shape)[1:]
    return layer
