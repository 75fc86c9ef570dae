"""A small batch-normalized CNN on Fashion-MNIST, trained on a 2-core CPU in about 6 minutes.

Network (channels-last, 28 x 28 x 1 inputs; every convolution 3 x 3 "same"
without bias, followed by batch normalization and a ReLU)::

    RandomFlip("horizontal")                   training only (--augment none: off)
    Conv 32 - BN - ReLU                        28 x 28
    MaxPool 2                                  14 x 14
    Conv 64 - BN - ReLU
    Conv 64 - BN - ReLU                        14 x 14
    MaxPool 2                                  7 x 7
    Flatten - Dense 128 (no bias) - BN - ReLU - Dropout 0.3
    Dense 10 softmax

Adam, batches of 128, 10 epochs, learning rate warmed up linearly over the
first half epoch to ``--lr`` then cosine-decayed to zero at the last step,
cross-entropy with label smoothing 0.1. The test set is evaluated once, after
the last epoch (``--eval-every 1`` adds a per-epoch curve, ~5 s an epoch;
nothing is selected on it). The flip test-time-augmentation figure is printed
beside the plain one, not instead of it.

Run (see docs/cnn.md for the figures)::

    python examples/fashion_mnist_cnn.py                 # the reported run: 93.3-93.6 %, ~6 min on 2 threads
    python examples/fashion_mnist_cnn.py --quick         # smoke run, ~10 s
    python examples/fashion_mnist_cnn.py --eval-every 1 --out model.npz

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
from normlab.optimizers import SGD, Adam, AdamW
from normlab.optimizers.schedules import CosineDecay

__all__ = ["build_model", "load_data", "train", "main", "DEFAULTS"]

#: the settings of the reported run
DEFAULTS = {
    "epochs": 10,
    "batch_size": 128,
    "learning_rate": 2e-3,
    "warmup_epochs": 0.5,
    "dropout": 0.3,
    "weight_decay": 0.0,
    "label_smoothing": 0.1,
    "optimizer": "adam",
    "blocks": ((32,), (64, 64)),
    "dense": 128,
    "augment": "flip",
    "threads": 2,
    "eval_every": 0,
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

    def __init__(self, x_test, y_test, t_start: float, print_fn=print, eval_batch: int = 1000,
                 eval_every: int = 1, epochs: int | None = None):
        super().__init__()
        self.x_test, self.y_test = x_test, y_test
        self.t_start, self.print_fn, self.eval_batch = t_start, print_fn, eval_batch
        self.eval_every, self.epochs = eval_every, epochs
        self.rows: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        t1 = time.perf_counter()
        last = self.epochs is not None and epoch + 1 == self.epochs
        if last or (self.eval_every and (epoch + 1) % self.eval_every == 0):
            res = self.model.evaluate(self.x_test, self.y_test, batch_size=self.eval_batch, return_dict=True)
        else:  # the test set is only a curve here: skipping it saves ~6 s an epoch
            res = {"loss": float("nan"), "accuracy": float("nan")}
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
    label_smoothing: float = DEFAULTS["label_smoothing"],
    optimizer: str = DEFAULTS["optimizer"],
    blocks=DEFAULTS["blocks"],
    dense: int = DEFAULTS["dense"],
    augment: str = DEFAULTS["augment"],
    threads: int | None = DEFAULTS["threads"],
    seed: int = DEFAULTS["seed"],
    eval_every: int = DEFAULTS["eval_every"],
    n_train: int | None = None,
    n_test: int | None = None,
    data=None,
    out: str | None = None,
    print_fn=print,
) -> dict:
    """Load the data, train, evaluate after each epoch; returns a dict of figures (JSON-ready).

    ``data``: ``((x, y), (x_test, y_test))`` arrays to use instead of Fashion-MNIST
    (channels-last images). ``threads``: BLAS threads (None: leave as is).
    ``eval_every``: evaluate the test set every that many epochs (0: only
    after the last one).
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
    # decoupled decay scales with the scheduled learning rate: w -= lr_t * weight_decay * w
    wd = weight_decay if weight_decay > 0 else None
    if optimizer == "sgd":
        opt = SGD(schedule, momentum=0.9, nesterov=True, weight_decay=wd)
    elif optimizer == "adam":
        opt = AdamW(schedule, weight_decay=wd) if wd else Adam(schedule)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    loss = normlab.losses.SparseCategoricalCrossentropy(label_smoothing=label_smoothing)
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    print_fn(
        f"Fashion-MNIST CNN: {len(x)} train / {len(x_test)} test images, {model.count_params()} parameters, "
        f"{epochs} epochs of {steps_per_epoch} steps (batch {batch_size}), {type(opt).__name__}{' (Nesterov momentum 0.9)' if optimizer == 'sgd' else ''} lr {learning_rate:g} "
        + (f"weight_decay {weight_decay:g} " if weight_decay > 0 else "")
        + (f"label_smoothing {label_smoothing:g} " if label_smoothing > 0 else "")
        + f"(warm-up {warmup} steps, cosine to 0), augment={augment}, threads={threads}, seed={seed}; "
        f"data loaded in {t_data:.1f} s; load average {load_before}"
    )
    report = EpochReport(x_test, y_test, t_start, print_fn, eval_every=eval_every, epochs=epochs)
    limits = threadpool_limits(int(threads)) if threads else contextlib.nullcontext()
    with limits:
        t_fit = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[report], seed=seed)
        fit_s = time.perf_counter() - t_fit
        # test-time augmentation, reported beside the plain figure: the mean of the softmax
        # outputs for each image and its mirror image (the flip the training saw)
        t_tta = time.perf_counter()
        probs = model.predict(x_test, batch_size=1000) + model.predict(x_test[:, :, ::-1], batch_size=1000)
        tta_acc = float(np.mean(np.argmax(probs, axis=-1) == np.asarray(y_test)))
        tta_s = time.perf_counter() - t_tta
    if out:
        model.save(out)
    wall = time.perf_counter() - t_start
    final = report.rows[-1] if report.rows else {}
    result = {
        "test_accuracy": final.get("test_accuracy"),
        "test_loss": final.get("test_loss"),
        "test_accuracy_flip_tta": tta_acc,
        "tta_s": tta_s,
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
            "dropout": dropout, "weight_decay": weight_decay, "label_smoothing": label_smoothing, "optimizer": optimizer, "blocks": [list(b) for b in blocks], "dense": dense, "augment": augment,
            "threads": threads, "seed": seed, "eval_every": eval_every, "n_train": len(x), "n_test": len(x_test),
        },
        "model": out,
    }
    print_fn(
        f"final test accuracy {result['test_accuracy']:.4f}; wall time {wall:.1f} s "
        f"(data {t_data:.1f} s, training {result['train_s']:.1f} s, per-epoch evaluation {result['eval_s']:.1f} s); "
        f"with flip test-time augmentation {tta_acc:.4f} ({tta_s:.1f} s); "
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
    p.add_argument("--lr", type=float, default=DEFAULTS["learning_rate"], help="peak learning rate")
    p.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="BLAS threads (default 2: the reported run; use 1 when another job shares the 2 cores)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--augment", choices=AUGMENTS, default=DEFAULTS["augment"])
    p.add_argument("--blocks", type=_blocks, default=DEFAULTS["blocks"], help='convolution widths per block, e.g. "32/64,64" (default)')
    p.add_argument("--dropout", type=float, default=DEFAULTS["dropout"])
    p.add_argument("--dense", type=int, default=DEFAULTS["dense"], help="units of the hidden Dense layer")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"], help="decoupled weight decay (Adam: AdamW)")
    p.add_argument("--label-smoothing", type=float, default=DEFAULTS["label_smoothing"], help="label smoothing of the cross-entropy")
    p.add_argument("--eval-every", type=int, default=DEFAULTS["eval_every"], help="evaluate the test set every N epochs (default 0: only after the last)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=DEFAULTS["optimizer"], help="Adam, or SGD with Nesterov momentum 0.9")
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
        seed=args.seed, augment=args.augment, blocks=args.blocks, dropout=args.dropout, dense=args.dense,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, optimizer=args.optimizer,
        eval_every=args.eval_every, out=args.out, **kw,
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
