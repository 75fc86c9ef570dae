"""Write the Keras 3 fixtures that tests/models/test_keras_format.py reads without Keras.

Run from the repository root with Keras 3 and h5py installed (any backend)::

    KERAS_BACKEND=jax python tests/models/data/keras/make_fixtures.py

Each model is trained for one epoch on random data (so the batch-norm
moving statistics are not their initial values), saved as ``<name>.keras``
and its predictions on ``<name>_x.npy`` kept as ``<name>_y.npy``. The files
are small (a few KB to a few tens of KB).
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
from keras import layers as L  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def mlp():
    """Dense + BatchNormalization + Dropout, Sequential, compiled with Adam and sparse cross-entropy."""
    model = keras.Sequential([
        keras.Input((8,)),
        L.Dense(16, use_bias=False),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.Dropout(0.3),
        L.Dense(16, activation="tanh", kernel_regularizer=keras.regularizers.L2(1e-4)),
        L.BatchNormalization(momentum=0.9, epsilon=1e-5),
        L.Dropout(0.2),
        L.Dense(3, activation="softmax"),
    ], name="mlp")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model, (8,), "classes"


def cnn():
    """Conv2D + BatchNormalization + pooling, Sequential, compiled with SGD (momentum) and cross-entropy."""
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        L.Conv2D(4, 3, padding="same", use_bias=False),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.MaxPooling2D(),
        L.Conv2D(6, (3, 3), strides=1, padding="valid", activation="relu"),
        L.BatchNormalization(center=False),
        L.AveragePooling2D(pool_size=2),
        L.Flatten(),
        L.Dense(4, activation="softmax"),
    ], name="cnn")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy",
                  metrics=["categorical_accuracy"])
    return model, (8, 8, 2), "onehot"


def residual():
    """Functional: two residual blocks (Dense, BN, ReLU, Add), LayerNormalization, concatenation."""
    inp = keras.Input((6,), name="features")
    h = L.Dense(6, name="proj")(inp)
    a = L.Dense(6, use_bias=False)(h)
    a = L.BatchNormalization()(a)
    a = L.Activation("relu")(a)
    h = L.Add()([h, a])
    b = L.Dense(6)(h)
    b = L.LayerNormalization()(b)
    b = L.Activation("gelu")(b)
    h = L.Add()([h, b])
    c = L.Concatenate()([h, inp])
    c = L.Dropout(0.1)(c)
    out = L.Dense(2)(c)
    model = keras.Model(inp, out, name="residual")
    model.compile(optimizer="rmsprop", loss="mse")
    return model, (6,), "regression"


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    for name, make in (("mlp", mlp), ("cnn", cnn), ("residual", residual)):
        model, shape, kind = make()
        x = rng.standard_normal((64,) + shape).astype("float32")
        out = model.output_shape[-1]
        if kind == "classes":
            y = rng.integers(0, out, 64)
        elif kind == "onehot":
            y = np.eye(out, dtype="float32")[rng.integers(0, out, 64)]
        else:
            y = rng.standard_normal((64, out)).astype("float32")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        x_test = rng.standard_normal((8,) + shape).astype("float32")
        path = os.path.join(HERE, f"{name}.keras")
        model.save(path)
        np.save(os.path.join(HERE, f"{name}_x.npy"), x_test)
        np.save(os.path.join(HERE, f"{name}_y.npy"), np.asarray(model.predict(x_test, verbose=0)))
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
