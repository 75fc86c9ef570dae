"""``normlab demo``: the batch-normalization paper's MNIST experiment, in small.

Ioffe and Szegedy (2015), section 4.1: a network of 3 fully connected hidden
layers of 100 sigmoid units and a 10-way softmax, trained with mini-batches
of 60 from small Gaussian initial weights, with and without batch
normalization. Here it runs on scikit-learn's bundled handwritten digits
(8x8 images, 1437 train / 360 test) so that it needs no download and ends in
seconds.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from ..callbacks.base import Callback


def build_network(bn: bool, *, placement: str = "before", init_stddev: float = 0.1, seed: int = 0):
    """The paper's 3 x 100 sigmoid network, optionally with batch normalization.

    ``placement="before"`` is the paper's ``sigmoid(BN(Wx))`` (the Dense bias is
    dropped: BN's mean subtraction cancels it); ``"after"`` is
    ``BN(sigmoid(Wx + b))``, common in practice.
    """
    from .. import Sequential, initializers
    from ..layers import Activation, BatchNormalization, Dense

    layers = []
    for i in range(3):
        init = initializers.RandomNormal(stddev=init_stddev, seed=seed + i)
        if not bn:
            layers.append(Dense(100, activation="sigmoid", kernel_initializer=init))
        elif placement == "before":
            layers += [Dense(100, use_bias=False, kernel_initializer=init), BatchNormalization(), Activation("sigmoid")]
        else:
            layers += [Dense(100, activation="sigmoid", kernel_initializer=init), BatchNormalization()]
    layers.append(
        Dense(10, activation="softmax", kernel_initializer=initializers.RandomNormal(stddev=init_stddev, seed=seed + 3))
    )
    return Sequential(layers, name="bn" if bn else "baseline")


class EvaluateEvery(Callback):
    """Record test accuracy every ``every`` steps and stop after ``steps`` steps."""

    def __init__(self, x_test, y_test, every: int, steps: int):
        super().__init__()
        self.x_test, self.y_test, self.every, self.steps = x_test, y_test, every, steps
        self.step = 0
        self.curve: list[tuple[int, float]] = []

    def _record(self):
        pred = self.model.predict(self.x_test, batch_size=512)
        self.curve.append((self.step, float(np.mean(pred.argmax(axis=1) == self.y_test))))

    def on_train_begin(self, logs=None):
        self._record()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0 or self.step == self.steps:
            self._record()
        if self.step >= self.steps:
            self.model.stop_training = True


def run_demo(
    *,
    steps: int = 2000,
    batch_size: int = 60,
    learning_rate: float = 0.5,
    optimizer: str = "sgd",
    placement: str = "before",
    eval_every: int = 200,
    seed: int = 0,
    print_fn=print,
) -> dict:
    """Train both networks and return their accuracy curves and timings."""
    from .. import optimizers
    from ..datasets import load_digits

    (x_train, y_train), (x_test, y_test) = load_digits()
    placements = ["before", "after"] if placement == "both" else [placement]
    runs = [("baseline", False, "before")] + [
        ("bn" if len(placements) == 1 else f"bn_{p}", True, p) for p in placements
    ]
    results = {}
    for key, bn, place in runs:
        model = build_network(bn, placement=place, seed=seed)
        opt = optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}})
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        cb = EvaluateEvery(x_test, y_test, eval_every, steps)
        epochs = math.ceil(steps / math.ceil(len(x_train) / batch_size))
        t0 = time.perf_counter()
        model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[cb], seed=seed)
        results[key] = {"curve": cb.curve, "seconds": time.perf_counter() - t0}

    titles = {"baseline": "no BN", "bn": "BN", "bn_before": "BN before", "bn_after": "BN after"}
    where = "before and after" if placement == "both" else placement
    print_fn(
        f"normlab demo: 3 x 100 sigmoid units, batches of {batch_size}, {optimizer} lr={learning_rate}, "
        f"digits ({len(x_train)} train / {len(x_test)} test), BN {where} the activation"
    )
    heads = [f"test acc ({titles[k]})" for k in results]
    print_fn(f"{'step':>6}  " + "  ".join(f"{h:>{max(14, len(h))}}" for h in heads))
    curves = [r["curve"] for r in results.values()]
    for row in zip(*curves):
        cells = "  ".join(f"{acc:>{max(14, len(h))}.4f}" for (_, acc), h in zip(row, heads))
        print_fn(f"{row[0][0]:>6}  {cells}")
    print_fn(
        "final: "
        + ", ".join(
            f"{'without BN' if k == 'baseline' else 'with ' + titles[k]} {r['curve'][-1][1]:.4f} ({r['seconds']:.1f} s)"
            for k, r in results.items()
        )
    )
    return results


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train the BN paper's MNIST network with and without batch norm on built-in digits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=2000, help="training steps per network (default 2000)")
    p.add_argument("--batch-size", type=int, default=60, help="mini-batch size (default 60, as in the paper)")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate (default 0.5)")
    p.add_argument(
        "--optimizer",
        default="sgd",
        choices=["sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam"],
        help="optimizer (default sgd)",
    )
    p.add_argument(
        "--placement",
        default="before",
        choices=["before", "after", "both"],
        help="batch norm before the sigmoid (the paper's placement, default), after it, or both "
        "(three networks side by side)",
    )
    p.add_argument("--eval-every", type=int, default=200, help="steps between test evaluations (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads (default 1: this network's matrices are small, and extra threads only add "
        "synchronization; 0 leaves the library's own setting)",
    )
    p.set_defaults(func=_main)


def _main(args) -> int:
    for name in ("steps", "batch_size", "eval_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"normlab demo: --{name.replace('_', '-')} must be >= 1")
    if not args.lr > 0:
        raise SystemExit("normlab demo: --lr must be > 0")
    if args.threads < 0:
        raise SystemExit("normlab demo: --threads must be >= 0")
    with blas_threads(args.threads):
        _run(args)
    return 0


def blas_threads(n: int):
    """Limit BLAS threads to ``n`` (0: unchanged) with threadpoolctl, if installed."""
    import contextlib

    if n == 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _run(args) -> None:
    run_demo(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        placement=args.placement,
        eval_every=args.eval_every,
        seed=args.seed,
    )
