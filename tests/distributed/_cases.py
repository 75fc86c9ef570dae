"""Models and data shared by the MPI worker (``_worker.py``) and the single-process references in the tests."""

from __future__ import annotations

import numpy as np

import normlab
from normlab import layers as L

F64 = "float64"


def data(n=101, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * 2.0 + 3.0
    y = (np.abs(x[:, 0] - x[:, 1] + 0.3 * x[:, 2]) * 1.7).astype(int) % classes
    return x, y


def images(n=40, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 6, 2)) + 1.0
    y = (x[:, :3].mean(axis=(1, 2, 3)) > 1.0).astype(int) + (x[:, 3:, :, 0].mean(axis=(1, 2)) > 1.0)
    return x, y


def mlp(bn=None, virtual_batch_size=None):
    """The BN-paper shape in miniature: Dense (no bias), [BN], relu, ..., softmax; ``bn`` in None, "sync", "plain"."""
    layers = [L.Dense(16, use_bias=bn is None, dtype=F64)]
    if bn is not None:
        layers.append(L.BatchNormalization(momentum=0.9, synchronized=bn == "sync",
                                           virtual_batch_size=virtual_batch_size, dtype=F64))
    layers += [L.Activation("relu", dtype=F64), L.Dense(3, activation="softmax", dtype=F64)]
    return normlab.Sequential(layers)


def deep(bn="sync"):
    """Three Dense + BN + relu blocks then softmax: three synchronized batch norms, so three meetings in backward."""
    layers = []
    for width in (12, 10, 8):
        layers += [L.Dense(width, use_bias=False, dtype=F64), L.BatchNormalization(synchronized=bn == "sync", dtype=F64),
                   L.Activation("relu", dtype=F64)]
    return normlab.Sequential(layers + [L.Dense(3, activation="softmax", dtype=F64)])


def cnn():
    return normlab.Sequential([
        L.Conv2D(4, 3, use_bias=False, dtype=F64),
        L.BatchNormalization(momentum=0.8, synchronized=True, dtype=F64),
        L.Activation("relu", dtype=F64),
        L.Flatten(dtype=F64),
        L.Dense(3, activation="softmax", dtype=F64),
    ])


def fixed_weights(model) -> list:
    """Weights for ``set_weights`` that do not depend on a generator: a cosine pattern, moving variances of 1."""
    out = []
    for layer in model.layers:
        for key, a in list(layer.params.items()) + list(layer.buffers.items()):
            out.append(np.ones(a.shape) if "variance" in key else
                       0.3 * np.cos(np.arange(a.size) + len(out)).reshape(a.shape))
    return out


def compile_(model, distribute=None):
    model.compile(normlab.optimizers.Adam(0.01, global_clipnorm=1.0), "sparse_categorical_crossentropy",
                  metrics=["accuracy"], distribute=distribute)
    return model


#: fit arguments of each case: (model builder, data, fit keyword arguments)
FIT = {
    "mlp": (lambda: mlp(None), data, dict(batch_size=32, epochs=3, seed=1)),
    "sync": (lambda: mlp("sync"), data, dict(batch_size=32, epochs=3, seed=1)),
    "cnn": (cnn, images, dict(batch_size=10, epochs=2, seed=2)),
    "deep": (deep, data, dict(batch_size=32, epochs=2, seed=3)),
    # even shards (96 = 3 x 32): plain BN on 2 ranks is ghost BN of 16 in one process
    "plain": (lambda: mlp("plain"), lambda: data(96), dict(batch_size=32, epochs=3, seed=1)),
}
