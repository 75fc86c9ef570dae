"""A small batch-normalized CNN on Fashion-MNIST, trained on a 2-core CPU in under 15 minutes.

Network (channels-last, 28 x 28 x 1 inputs; every convolution 3 x 3 "same"
without bias, followed by batch normalization and a ReLU)::

    [RandomFlip("horizontal")]                 training only, --augment flip
    Conv 32 - BN - ReLU                        28 x 28
    MaxPool 2                                  14 x 14
    Conv 64 - BN - ReLU
    Conv 64 - BN - ReLU                        14 x 14
    MaxPool 2                                  7 x 7
    Flatten - Dense 128 (no bias) - BN - ReLU - Dropout 0.3
    Dense 10 softmax

Adam, batches of 128, learning rate warmed up linearly over the first half
epoch to ``--lr`` then cosine-decayed to zero at the last step. The test set
is evaluated after every epoch for the curve only (nothing is selected on
it: the reported figure is the last epoch's).

Run (see docs/cnn.md for the figures)::

    python examples/fashion_mnist_cnn.py                 # the full run, ~13 min on 1 thread
    python examples/fashion_mnist_cnn.py --quick         # smoke run, ~20 s
    python examples/fashion_mnist_cnn.py --threads 2 --out model.npz

Needs Fashion-MNIST (Debian: ``apt-get install dataset-fashion-mnist``, or
``$NORMLAB_DATA/fashion-mnist``; see :func:`normlab.datasets.load_fashion_mnist`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

try:
    import normlab
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
    import normlab

from normlab.callbacks import Callback
from normlab.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPooling2D,
    RandomFlip,
    RandomTranslation,
)
from normlab.optimizers import Adam, AdamW
from normlab.optimizers.schedules import CosineDecay

__all__ = ["build_model", "load_data", "train", "main", "DEFAULTS"]

#: the settings of the reported run
DEFAULTS = {
    "epochs": 7,
    "batch_size": 128,
    "learning_rate": 2e-3,
    "warmup_epochs": 0.5,
    "dropout": 0.3,
    "weight_decay": 0.0,
    "blocks": ((32,), (64, 64)),
    "dense": 128,
    "augment": "none",
    "threads": 1,
    "seed": 0,
}
AUGMENTS = ("none", "flip", "flip+translate")


def _conv_bn_relu(filters: int, seed: int) -> list:
    return [
        Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer={"class_name": "he_uniform", "config": {"seed": seed}}),
        BatchNormalization(),
        Activation("relu"),
    ]


def build_model(
    *,
    blocks=DEFAULTS["blocks"],
    dense: int = DEFAULTS["dense"],
    dropout: float = DEFAULTS["dropout"],
    augment: str = DEFAULTS["augment"],
    seed: int = 0,
    input_shape=(28, 28, 1),
) -> normlab.Sequential:
    """The network above: one tuple of convolution widths per block, a 2 x 2 max pool after each."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    base = 1000 * int(seed)  # disjoint per-layer seeds for seeds 0, 1, 2, ...
    layers: list = []
    if augment != "none":
        layers.append(RandomFlip("horizontal", seed=base + 900))
    if augment == "flip+translate":
        layers.append(RandomTranslation(0.1, 0.1, fill_mode="constant", interpolation="nearest", seed=base + 901))
    k = 0
    for widths in blocks:
        for f in widths:
            layers += _conv_bn_relu(int(f), base + k)
            k += 1
        layers.append(MaxPooling2D(2))
    layers += [
        Flatten(),
        Dense(dense, use_bias=False, kernel_initializer={"class_name": "he_uniform", "config": {"seed": base + k}}),
        BatchNormalization(),
        Activation("relu"),
    ]
    if dropout > 0:
        layers.append(Dropout(dropout, seed=base + 950))
    layers.append(Dense(10, activation="softmax", kernel_initializer={"class_name": "glorot_uniform", "config": {"seed": base + k + 1}}))
    model = normlab.Sequential(layers, name="fashion_cnn")
    model.build((None,) + tuple(input_shape), seed=seed)
    return model


def load_data(n_train: int | None = None, n_test: int | None = None):
    """Fashion-MNIST as ``(N, 28, 28, 1)`` float32 in [0, 1] and int64 labels (first ``n`` of each split)."""
    (x, y), (xt, yt) = normlab.datasets.load_fashion_mnist()
    x, y, xt, yt = x[:n_train], y[:n_train], xt[:n_test], yt[:n_test]
    return (x[..., None], y), (xt[..., None], yt)


class EpochReport(Callback):
    """After each epoch: training time, test accuracy (inference mode), one printed line."""

    def __init__(self, x_test, y_test, t_start: float, print_fn=print, eval_batch: int = 1000):
        super().__init__()
        self.x_test, self.y_test = x_test, y_test
        self.t_start, self.print_fn, self.eval_batch = t_start, print_fn, eval_batch
        self.rows: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        t1 = time.perf_counter()
        res = self.model.evaluate(self.x_test, self.y_test, batch_size=self.eval_batch, return_dict=True)
        t2 = time.perf_counter()
        row = {
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", float("nan"))),
            "accuracy": float(logs.get("accuracy", float("nan"))),
            "test_loss": float(res["loss"]),
            "test_accuracy": float(res["accuracy"]),
            "learning_rate": float(logs.get("learning_rate", float("nan"))),
            "train_s": t1 - self._t0,
            "eval_s": t2 - t1,
            "wall_s": t2 - self.t_start,
        }
        self.rows.append(row)
        self.print_fn(
            f"epoch {row['epoch']:2d}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
            f"test_loss {row['test_loss']:.4f}  test_acc {row['test_accuracy']:.4f}  "
            f"train {row['train_s']:6.1f} s  eval {row['eval_s']:4.1f} s  wall {row['wall_s']:6.1f} s"
        )


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def train(
    *,
    epochs: int = DEFAULTS["epochs"],
    batch_size: int = DEFAULTS["batch_size"],
    learning_rate: float = DEFAULTS["learning_rate"],
    warmup_epochs: float = DEFAULTS["warmup_epochs"],
    dropout: float = DEFAULTS["dropout"],
    weight_decay: float = DEFAULTS["weight_decay"],
    blocks=DEFAULTS["blocks"],
    dense: int = DEFAULTS["dense"],
    augment: str = DEFAULTS["augment"],
    threads: int | None = DEFAULTS["threads"],
    seed: int = DEFAULTS["seed"],
    n_train: int | None = None,
    n_test: int | None = None,
    data=None,
    out: str | None = None,
    print_fn=print,
) -> dict:
    """Load the data, train, evaluate after each epoch; returns a dict of figures (JSON-ready).

    ``data``: ``((x, y), (x_test, y_test))`` arrays to use instead of Fashion-MNIST
    (channels-last images). ``threads``: BLAS threads (None: leave as is).
    """
    import contextlib

    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    load_before = _loadavg()
    if data is None:
        (x, y), (x_test, y_test) = load_data(n_train, n_test)
    else:
        (x, y), (x_test, y_test) = data
        x, y, x_test, y_test = x[:n_train], y[:n_train], x_test[:n_test], y_test[:n_test]
    t_data = time.perf_counter() - t_start

    model = build_model(blocks=blocks, dense=dense, dropout=dropout, augment=augment, seed=seed, input_shape=x.shape[1:])
    steps_per_epoch = -(-len(x) // batch_size)
    total = max(1, epochs * steps_per_epoch)
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total - 1)
    schedule = CosineDecay(
        learning_rate / 10 if warmup else learning_rate, total - warmup, alpha=0.0,
        warmup_target=learning_rate if warmup else None, warmup_steps=warmup,
    )
    # decoupled decay (AdamW) scales with the scheduled learning rate: w -= lr_t * weight_decay * w
    optimizer = AdamW(schedule, weight_decay=weight_decay) if weight_decay > 0 else Adam(schedule)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print_fn(
        f"Fashion-MNIST CNN: {len(x)} train / {len(x_test)} test images, {model.count_params()} parameters, "
        f"{epochs} epochs of {steps_per_epoch} steps (batch {batch_size}), {type(optimizer).__name__} lr {learning_rate:g} "
        + (f"weight_decay {weight_decay:g} " if weight_decay > 0 else "")
        + f"(warm-up {warmup} steps, cosine to 0), augment={augment}, threads={threads}, seed={seed}; "
        f"data loaded in {t_data:.1f} s; load average {load_before}"
    )
    report = EpochReport(x_test, y_test, t_start, print_fn)
    limits = threadpool_limits(int(threads)) if threads else contextlib.nullcontext()
    with limits:
        t_fit = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[report], seed=seed)
        fit_s = time.perf_counter() - t_fit
    if out:
        model.save(out)
    wall = time.perf_counter() - t_start
    final = report.rows[-1] if report.rows else {}
    result = {
        "test_accuracy": final.get("test_accuracy"),
        "test_loss": final.get("test_loss"),
        "train_accuracy_running": final.get("accuracy"),
        "wall_s": wall,
        "fit_s": fit_s,
        "data_s": t_data,
        "train_s": sum(r["train_s"] for r in report.rows),
        "eval_s": sum(r["eval_s"] for r in report.rows),
        "epochs": report.rows,
        "params": model.count_params(),
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "config": {
            "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "warmup_steps": warmup,
            "dropout": dropout, "weight_decay": weight_decay, "blocks": [list(b) for b in blocks], "dense": dense, "augment": augment,
            "threads": threads, "seed": seed, "n_train": len(x), "n_test": len(x_test),
        },
        "model": out,
    }
    print_fn(
        f"final test accuracy {result['test_accuracy']:.4f}; wall time {wall:.1f} s "
        f"(data {t_data:.1f} s, training {result['train_s']:.1f} s, per-epoch evaluation {result['eval_s']:.1f} s); "
        f"load average {result['loadavg_after']}" + (f"; saved {out}" if out else "")
    )
    return result


def _blocks(text: str):
    """``"32/64,64"`` -> ``((32,), (64, 64))``."""
    return tuple(tuple(int(v) for v in b.split(",")) for b in text.split("/"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["learning_rate"], help="peak Adam learning rate")
    p.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="BLAS threads (default 1: fastest on a busy 2-core machine)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--augment", choices=AUGMENTS, default=DEFAULTS["augment"])
    p.add_argument("--blocks", type=_blocks, default=DEFAULTS["blocks"], help='convolution widths per block, e.g. "32/64,64" (default)')
    p.add_argument("--dropout", type=float, default=DEFAULTS["dropout"])
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"], help="AdamW decoupled weight decay (0: Adam)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2,000 train / 1,000 test images, 1 epoch")
    p.add_argument("--out", default=None, help="save the trained model here (e.g. model.npz)")
    p.add_argument("--json", default=None, help="write the figures (per-epoch curve, times) here")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    kw = {}
    if args.quick:
        kw = {"n_train": 2000, "n_test": 1000}
        args.epochs = min(args.epochs, 1)
    res = train(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, threads=args.threads,
        seed=args.seed, augment=args.augment, blocks=args.blocks, dropout=args.dropout,
        weight_decay=args.weight_decay, out=args.out, **kw,
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
