"""Overfitting and three cures, on real data (scikit-learn's handwritten digits).

A wide network trained on only 200 digits memorizes them: training accuracy
reaches 100% while the test accuracy stalls and the test loss climbs. Dropout,
an L2 penalty on the kernels, and early stopping (with the best weights
restored) each narrow the gap.

Run::

    python examples/overfitting.py            # about a minute on 2 cores
    python examples/overfitting.py --quick    # a smoke run

Prints a table: final train accuracy, test accuracy, test loss, epochs run.
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


def run(epochs: int = 150, n_train: int = 200, seed: int = 0, print_fn=print) -> dict:
    (x_train, y_train), (x_test, y_test) = normlab.datasets.load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x_train))
    # a small training set, and a validation set for early stopping
    x_tr, y_tr = x_train[idx[:n_train]], y_train[idx[:n_train]]
    x_val, y_val = x_train[idx[n_train : n_train + 200]], y_train[idx[n_train : n_train + 200]]
    results = {}
    for kind in ("none", "dropout", "l2", "early_stopping"):
        model = build(kind, seed)
        callbacks = []
        if kind == "early_stopping":
            callbacks.append(EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True))
        hist = model.fit(
            x_tr, y_tr, batch_size=32, epochs=epochs, validation_data=(x_val, y_val),
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
    print_fn(f"digits, {n_train} training samples, 2 x 512 relu, Adam(1e-3), up to {epochs} epochs, seed {seed}")
    print_fn(f"{'regularization':<16}{'train acc':>10}{'test acc':>10}{'test loss':>11}{'epochs':>8}")
    for kind, r in results.items():
        print_fn(f"{kind:<16}{r['train_accuracy']:>10.3f}{r['test_accuracy']:>10.3f}{r['test_loss']:>11.3f}{r['epochs']:>8}")
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="5 epochs, for a smoke test")
    a = p.parse_args()
    run(epochs=5 if a.quick else a.epochs, seed=a.seed)
