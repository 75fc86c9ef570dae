"""Overfitting and three cures, on real data (Fashion-MNIST, or digits without it).

A wide network (2 x 512 relu) trained on only 1,000 Fashion-MNIST images
memorizes them: training accuracy reaches 100% and the test loss climbs as
the network grows confident in its mistakes. Dropout, an L2 penalty on the
kernels, and early stopping (with the best weights restored) each cut the
test loss; dropout also gains test accuracy.

Run::

    python examples/overfitting.py            # about two minutes on 2 cores
    python examples/overfitting.py --quick    # a smoke run

Prints a table: train accuracy, test accuracy, test loss, epochs run.
"""

from __future__ import annotations

import argparse

import numpy as np

import normlab
from normlab.callbacks import EarlyStopping
from normlab.layers import Dense, Dropout
from normlab.regularizers import L2


def build(kind: str, seed: int = 0):
    reg = L2(1e-3) if kind == "l2" else None
    layers = [Dense(512, activation="relu", kernel_regularizer=reg)]
    if kind == "dropout":
        layers.append(Dropout(0.5, seed=seed))
    layers.append(Dense(512, activation="relu", kernel_regularizer=reg))
    if kind == "dropout":
        layers.append(Dropout(0.5, seed=seed + 1))
    layers.append(Dense(10, activation="softmax", kernel_regularizer=reg))
    model = normlab.Sequential(layers, name=kind)
    model.compile(
        optimizer=normlab.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def load(n_train: int, seed: int):
    """``n_train`` training and 1,000 validation images, and 5,000 test images."""
    try:
        (x, y), (x_test, y_test) = normlab.datasets.load_fashion_mnist(flatten=True)
        name = "Fashion-MNIST"
        x_test, y_test = x_test[:5000], y_test[:5000]
    except FileNotFoundError:
        (x, y), (x_test, y_test) = normlab.datasets.load_digits()
        name, n_train = "digits", min(n_train, 200)
    idx = np.random.default_rng(seed).permutation(len(x))
    tr, va = idx[:n_train], idx[n_train : n_train + min(1000, len(x) - n_train)]
    return name, (x[tr], y[tr]), (x[va], y[va]), (x_test, y_test)


def run(epochs: int = 100, n_train: int = 1000, seed: int = 0, print_fn=print) -> dict:
    name, (x_tr, y_tr), (x_val, y_val), (x_test, y_test) = load(n_train, seed)
    results = {}
    for kind in ("none", "dropout", "l2", "early_stopping"):
        model = build(kind, seed)
        callbacks = []
        if kind == "early_stopping":
            callbacks.append(EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True))
        hist = model.fit(
            x_tr, y_tr, batch_size=64, epochs=epochs, validation_data=(x_val, y_val),
            callbacks=callbacks, verbose=0, seed=seed,
        )
        train = model.evaluate(x_tr, y_tr, return_dict=True)
        test = model.evaluate(x_test, y_test, return_dict=True)
        results[kind] = {
            "train_accuracy": train["accuracy"],
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "epochs": len(hist.history["loss"]),
        }
    print_fn(f"{name}, {len(x_tr)} training images, 2 x 512 relu, Adam(1e-3), up to {epochs} epochs, seed {seed}")
    print_fn(f"{'regularization':<16}{'train acc':>10}{'test acc':>10}{'test loss':>11}{'epochs':>8}")
    for kind, r in results.items():
        print_fn(f"{kind:<16}{r['train_accuracy']:>10.3f}{r['test_accuracy']:>10.3f}{r['test_loss']:>11.3f}{r['epochs']:>8}")
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="5 epochs, for a smoke test")
    a = p.parse_args()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small matrices: one BLAS thread is fastest
        run(epochs=5 if a.quick else a.epochs, seed=a.seed)
