"""Self-normalizing networks (Klambauer et al. 2017): SELU with LeCun-normal weights.

The notes' last normalization: no normalization layer at all. With
``Var(w) = 1/fan_in`` and SELU's constants, (mean 0, variance 1) is a stable
fixed point of the map from one layer's activation statistics to the next,
so a deep stack keeps its activations standardized; sigmoid and ReLU with
Glorot weights do not.
"""

import numpy as np
import pytest

from normlab.kernels.activations import SELU_ALPHA, SELU_SCALE, selu
from normlab.layers import Dense

DEPTH, WIDTH, BATCH = 16, 100, 2000


def layer_stats(activation, initializer, *, seed=0, mean=0.0, std=1.0):
    """Mean and variance (over the whole batch x units matrix) after each of 16 layers."""
    build_rng = np.random.default_rng(seed)
    h = np.random.default_rng(seed + 1000).standard_normal((BATCH, WIDTH)) * std + mean
    stats = []
    for _ in range(DEPTH):
        layer = Dense(WIDTH, activation=activation, kernel_initializer=initializer, dtype="float64")
        layer.build_from_shape((None, WIDTH), build_rng)
        h = layer(h)
        stats.append((float(h.mean()), float(h.var())))
    return stats


def in_band(m, v):
    return abs(m) < 0.1 and abs(v - 1.0) < 0.25


def test_selu_constants_make_zero_mean_unit_variance_a_fixed_point():
    """E[selu(z)] = 0 and E[selu(z)^2] = 1 for z ~ N(0, 1) (trapezoid rule, kink on a node)."""
    z = np.linspace(-12.0, 12.0, 240_001)
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    a = selu(z)

    def expect(f):
        g = f * pdf
        return float(np.sum(g[1:] + g[:-1]) * (z[1] - z[0]) / 2)

    assert abs(expect(a)) < 1e-7
    assert abs(expect(a * a) - 1.0) < 1e-7
    assert SELU_ALPHA == pytest.approx(1.6732632423543772) and SELU_SCALE == pytest.approx(1.0507009873554805)


@pytest.mark.parametrize("seed", [0, 1])
def test_selu_lecun_normal_stays_standardized_through_16_layers(seed):
    stats = layer_stats("selu", "lecun_normal", seed=seed)
    assert all(in_band(m, v) for m, v in stats), stats
    m, v = stats[-1]
    assert abs(m) < 0.1 and abs(v - 1) < 0.25


@pytest.mark.parametrize("mean,std", [(0.3, 1.25), (0.0, 0.5), (0.5, 2.0)])
def test_selu_pulls_off_standard_inputs_back_to_the_fixed_point(mean, std):
    m, v = layer_stats("selu", "lecun_normal", mean=mean, std=std)[-1]
    assert in_band(m, v), (m, v)


@pytest.mark.parametrize(
    "activation,check",
    [
        # sigmoid outputs are positive with a small spread: mean ~0.5, variance ~0.01
        ("sigmoid", lambda m, v: m > 0.3 and v < 0.1),
        # relu halves the second moment at each layer under Glorot: variance collapses
        ("relu", lambda m, v: v < 1e-2),
    ],
)
def test_sigmoid_and_relu_with_glorot_leave_the_band(activation, check):
    stats = layer_stats(activation, "glorot_uniform")
    m, v = stats[-1]
    assert not in_band(m, v), (m, v)
    assert check(m, v), (m, v)
    if activation == "relu":
        variances = [s[1] for s in stats]
        assert all(b < a for a, b in zip(variances[1:], variances[2:]))  # steadily shrinking
