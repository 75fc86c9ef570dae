"""The MNIST-1D paper's CNN in normlab (Greydanus 2020: about 94% test accuracy).

Network, as the reference implementation's ``ConvBase`` (github.com/greydanus/mnist1d),
channels-last, on the 40-sample signals::

    Reshape (40, 1)
    Conv1D 25, kernel 5, stride 2 - ReLU        20 steps
    Conv1D 25, kernel 3, stride 2 - ReLU        10 steps
    Conv1D 25, kernel 3, stride 2 - ReLU         5 steps
    Flatten (125) - Dense 10 softmax

The reference pads each convolution by one step on both sides (19, 10, 5
steps); here the padding is Keras's "same" (20, 10, 5), the same 125 features
reach the linear layer. ``--bn`` puts a batch normalization between each
convolution (then without bias) and its ReLU.

Training as the reference: Adam, learning rate 0.01, batches of 100, 6000
steps (150 epochs of the 4000 training signals), the last model kept; the
test accuracy on the 1000 test signals is recorded every ``--eval-every``
steps for the curve (nothing is selected on it).

Run::

    python examples/mnist1d_cnn.py                 # 3 seeds, ~1 min each on 1 thread
    python examples/mnist1d_cnn.py --seeds 1 --bn
    python examples/mnist1d_cnn.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
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
from normlab.layers import Activation, BatchNormalization, Conv1D, Dense, Flatten, Reshape
from normlab.optimizers import Adam

__all__ = ["build_model", "train", "run", "main", "PUBLISHED"]

#: the paper's CNN test accuracy
PUBLISHED = 0.94


def build_model(*, bn: bool = False, channels: int = 25, length: int = 40, seed: int = 0) -> normlab.Sequential:
    """The reference CNN (``bn``: Conv1D without bias - BatchNormalization - ReLU)."""
    base = 1000 * int(seed)
    layers: list = [Reshape((length, 1))]
    for i, k in enumerate((5, 3, 3)):
        init = {"class_name": "glorot_uniform", "config": {"seed": base + i}}
        if bn:
            layers += [Conv1D(channels, k, strides=2, padding="same", use_bias=False, kernel_initializer=init),
                       BatchNormalization(), Activation("relu")]
        else:
            layers.append(Conv1D(channels, k, strides=2, padding="same", activation="relu", kernel_initializer=init))
    layers += [Flatten(), Dense(10, activation="softmax", kernel_initializer={"class_name": "glorot_uniform", "config": {"seed": base + 9}})]
    model = normlab.Sequential(layers, name="mnist1d_cnn_bn" if bn else "mnist1d_cnn")
    model.build((None, length), seed=seed)
    return model


class _EvalEvery(Callback):
    """Test accuracy every ``every`` steps (and at the last); stops training after ``steps`` steps."""

    def __init__(self, x_test, y_test, every: int, steps: int):
        super().__init__()
        self.x_test, self.y_test, self.every, self.steps = x_test, y_test, every, steps
        self.step = 0
        self.curve: list[tuple[int, float]] = []

    def _record(self):
        pred = self.model.predict(self.x_test, batch_size=1000)
        self.curve.append((self.step, float(np.mean(pred.argmax(axis=1) == self.y_test))))

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0 or self.step == self.steps:
            self._record()
        if self.step >= self.steps:
            self.model.stop_training = True


def train(data, *, steps=6000, batch_size=100, learning_rate=1e-2, bn=False, eval_every=250, seed=0) -> dict:
    """Train one network on ``data = ((x, y), (x_test, y_test))``; returns accuracies, curve, seconds."""
    (x, y), (x_test, y_test) = data
    model = build_model(bn=bn, length=x.shape[1], seed=seed)
    model.compile(optimizer=Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    evaluate = _EvalEvery(x_test, y_test, eval_every, steps)
    epochs = math.ceil(steps / math.ceil(len(x) / batch_size))
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[evaluate], seed=seed)
    seconds = time.perf_counter() - t0
    train_res = model.evaluate(x, y, batch_size=1000, return_dict=True)
    test_res = model.evaluate(x_test, y_test, batch_size=1000, return_dict=True)
    return {
        "seed": seed,
        "steps": evaluate.step,
        "train_accuracy": float(train_res["accuracy"]),
        "test_accuracy": float(test_res["accuracy"]),
        "test_loss": float(test_res["loss"]),
        "best_test_accuracy": max(a for _, a in evaluate.curve),
        "curve": [[int(s), a] for s, a in evaluate.curve],
        "seconds": seconds,
        "params": model.count_params(),
    }


def run(
    *,
    steps: int = 6000,
    batch_size: int = 100,
    learning_rate: float = 1e-2,
    bn: bool = False,
    n_seeds: int = 3,
    seed: int = 0,
    eval_every: int = 250,
    threads: int | None = 1,
    n_train: int | None = None,
    n_test: int | None = None,
    print_fn=print,
) -> dict:
    """Train ``n_seeds`` networks (seeds ``seed, seed + 1, ...``) and summarize their test accuracies."""
    import contextlib

    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    (x, y), (x_test, y_test) = normlab.datasets.load_mnist1d()
    data = ((x[:n_train], y[:n_train]), (x_test[:n_test], y_test[:n_test]))
    name = "CNN + BN" if bn else "CNN"
    print_fn(
        f"MNIST-1D {name}: {len(data[0][0])} train / {len(data[1][0])} test signals, Adam lr {learning_rate:g}, "
        f"batches of {batch_size}, {steps} steps, threads={threads}, load average {_loadavg()}"
    )
    runs = []
    limits = threadpool_limits(int(threads)) if threads else contextlib.nullcontext()
    with limits:
        for s in range(seed, seed + n_seeds):
            r = train(data, steps=steps, batch_size=batch_size, learning_rate=learning_rate, bn=bn,
                      eval_every=eval_every, seed=s)
            runs.append(r)
            print_fn(
                f"seed {s}: test accuracy {r['test_accuracy']:.4f} (best along the way {r['best_test_accuracy']:.4f}), "
                f"train accuracy {r['train_accuracy']:.4f}, {r['seconds']:.1f} s"
            )
    acc = np.array([r["test_accuracy"] for r in runs])
    res = {
        "model": name,
        "params": runs[0]["params"],
        "test_accuracy": float(acc.mean()),
        "test_accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "test_accuracies": acc.tolist(),
        "published": PUBLISHED,
        "seconds_per_run": float(np.mean([r["seconds"] for r in runs])),
        "wall_s": time.perf_counter() - t_start,
        "loadavg": _loadavg(),
        "runs": runs,
        "config": {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "bn": bn,
                   "threads": threads, "seeds": list(range(seed, seed + n_seeds))},
    }
    print_fn(
        f"{name}: test accuracy {res['test_accuracy']:.4f} +- {res['test_accuracy_std']:.4f} over {len(runs)} seed(s) "
        f"(published {PUBLISHED:.2f}); {res['seconds_per_run']:.1f} s per run, {res['wall_s']:.1f} s in all"
    )
    return res


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--bn", action="store_true", help="batch normalization after each convolution")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (runs)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: 200 steps, one seed")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.eval_every = min(args.steps, 200), 1, 50
    res = run(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, bn=args.bn, n_seeds=args.seeds,
              seed=args.seed, eval_every=args.eval_every, threads=args.threads)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
