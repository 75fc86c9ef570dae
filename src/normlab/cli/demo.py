"""``normlab demo``: the batch-normalization paper's MNIST experiment, in small.

Ioffe and Szegedy (2015), section 4.1: a network of 3 fully connected hidden
layers of 100 sigmoid units and a 10-way softmax, trained with mini-batches
of 60 from small Gaussian initial weights, with and without batch
normalization. Here it runs on scikit-learn's bundled handwritten digits
(8x8 images, 1437 train / 360 test) so that it needs no download and ends in
seconds. It prints a table of test accuracy against training steps, one
column per network, and a sentence saying what the table shows.

Needs scikit-learn (the digits): pip install "normlab[datasets]".
"""

from __future__ import annotations

import math
import shutil
import sys
import textwrap
import time

import numpy as np

from ..callbacks.base import Callback
from ..callbacks.progbar import interactive
from ._common import add_command, nonnegative_int, positive_float, positive_int, say, warm_up


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


class _StepBar(Callback):
    """A tqdm bar over one network's training steps (drawn only on a terminal)."""

    def __init__(self, total: int, desc: str):
        super().__init__()
        self.total, self.desc = total, desc
        self._bar = None

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.total, desc=self.desc, unit="step", leave=False, file=sys.stderr,
                         dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        self._bar.update(1)

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


TITLES = {"baseline": "no BN", "bn": "BN", "bn_before": "BN before", "bn_after": "BN after"}
# how the closing sentence names each network
NAMES = {
    "baseline": "without it",
    "bn": "with batch normalization",
    "bn_before": "with batch normalization before the sigmoid",
    "bn_after": "with it after the sigmoid",
}


def _networks(placement: str) -> list[tuple[str, bool, str]]:
    placements = ["before", "after"] if placement == "both" else [placement]
    return [("baseline", False, "before")] + [
        ("bn" if len(placements) == 1 else f"bn_{p}", True, p) for p in placements
    ]


def _train(data, bn: bool, place: str, *, steps, batch_size, learning_rate, optimizer, eval_every, seed,
           callbacks=()) -> dict:
    from .. import optimizers

    (x_train, y_train), (x_test, y_test) = data
    model = build_network(bn, placement=place, seed=seed)
    opt = optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}})
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cb = EvaluateEvery(x_test, y_test, eval_every, steps)
    epochs = math.ceil(steps / math.ceil(len(x_train) / batch_size))
    t0 = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[cb, *callbacks],
              seed=seed)
    return {"curve": cb.curve, "seconds": time.perf_counter() - t0}


def _first_step_above(curve, level: float):
    return next((step for step, acc in curve if acc > level), None)


def describe(results: dict, steps: int, eval_every: int) -> str:
    """One sentence, in words, on what the demo's table shows.

    Parameters
    ----------
    results : dict
        ``run_demo``'s result: ``{"baseline": {"curve": [(step, accuracy),
        ...]}, "bn" (or "bn_before" and "bn_after"): {...}}``.
    steps : int
        Training steps per network.
    eval_every : int
        Steps between the table's rows.
    """
    parts = []
    # batch normalization first, the baseline ("without it") last
    for key in [k for k in results if k != "baseline"] + ["baseline"]:
        curve = results[key]["curve"]
        first = _first_step_above(curve, 0.5)
        when = f"above 50 % from step {first}" if first is not None else "never above 50 %"
        parts.append(f"{100 * curve[-1][1]:.1f} % {NAMES[key]} ({when})")
    base = results["baseline"]["curve"]
    # the better batch-normalized network (by final accuracy) against the baseline
    bn = max((r["curve"] for k, r in results.items() if k != "baseline"), key=lambda c: c[-1][1])
    gap = 100 * (bn[-1][1] - base[-1][1])
    never = float("inf")
    first_bn, first_base = _first_step_above(bn, 0.5), _first_step_above(base, 0.5)
    faster = (never if first_bn is None else first_bn) < (never if first_base is None else first_base)
    if faster and gap >= 5:
        verdict = "batch normalization made the same network, at the same learning rate, learn faster and end higher"
    elif faster and gap > -5:
        verdict = f"batch normalization made the network learn faster, though both ended within {abs(gap):.1f} points"
    elif faster:
        verdict = f"batch normalization made the network learn faster but end {-gap:.1f} points lower"
    elif gap >= 5:
        verdict = f"batch normalization ended {gap:.1f} points higher"
    elif gap > -5:
        verdict = "batch normalization made little difference here"
    else:
        verdict = "in this run batch normalization did not help"
    return (
        f"The table gives the test accuracy every {eval_every} training steps: after {steps} steps the network "
        f"reached {', '.join(parts[:-1])} and {parts[-1]}, so {verdict}."
    )


def run_demo(
    *,
    steps: int = 2000,
    batch_size: int = 60,
    learning_rate: float = 0.5,
    optimizer: str = "sgd",
    placement: str = "before",
    eval_every: int = 200,
    seed: int = 0,
    data=None,
    print_fn=say,
    progress: bool | None = None,
) -> dict:
    """Train the networks, printing as it goes; return their accuracy curves and timings.

    Parameters
    ----------
    steps, batch_size, learning_rate, optimizer, placement, eval_every, seed
        As the command line's options.
    data : ((x_train, y_train), (x_test, y_test)), optional
        Default: :func:`normlab.datasets.load_digits` (needs scikit-learn).
    print_fn : callable, default print (flushed at once)
    progress : bool, optional
        A progress bar per network on stderr; default: when stderr is a terminal.

    Returns
    -------
    dict
        ``{key: {"curve": [(step, test accuracy), ...], "seconds": float}}``
        with keys ``"baseline"`` and ``"bn"`` (``"bn_before"`` and
        ``"bn_after"`` for ``placement="both"``).
    """
    if data is None:
        from ..datasets import load_digits

        data = load_digits()
    (x_train, _), (x_test, _) = data
    if progress is None:
        progress = interactive(sys.stderr)
    runs = _networks(placement)
    where = "before and after" if placement == "both" else placement
    # the closing sentence wrapped to the terminal (at most 100 columns), or to 79 in a pipe
    width = max(40, min(100, shutil.get_terminal_size().columns - 1))
    print_fn(f"normlab demo: 3 x 100 sigmoid units, BN {where} the activation, {steps} steps each")
    print_fn(f"  on digits ({len(x_train)} train / {len(x_test)} test), batches of {batch_size}, "
             f"{optimizer} lr={learning_rate}")
    settings = dict(batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer, seed=seed)

    def warm():
        # two steps of each network: every kernel the runs below call, compiled (or
        # loaded from numba's cache) before any timing starts
        for _, bn, place in runs:
            _train(data, bn, place, steps=2, eval_every=1, **settings)

    warm_up(warm, "normlab demo")
    results = {}
    for key, bn, place in runs:
        bar = [_StepBar(steps, TITLES[key])] if progress else []
        results[key] = r = _train(data, bn, place, steps=steps, eval_every=eval_every, callbacks=bar, **settings)
        print_fn(f"  {TITLES[key] + ':':<10} {steps} steps in {r['seconds']:.1f} s, "
                 f"test accuracy {r['curve'][-1][1]:.4f}")

    heads = [f"test acc ({TITLES[k]})" for k in results]
    print_fn(f"{'step':>6}  " + "  ".join(f"{h:>{max(14, len(h))}}" for h in heads))
    curves = [r["curve"] for r in results.values()]
    for row in zip(*curves):
        cells = "  ".join(f"{acc:>{max(14, len(h))}.4f}" for (_, acc), h in zip(row, heads))
        print_fn(f"{row[0][0]:>6}  {cells}")
    print_fn(textwrap.fill(describe(results, steps, eval_every), width=width))
    return results


OPTIMIZERS = ["sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam"]


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "demo",
        help="train the BN paper's MNIST network with and without batch norm on built-in digits",
        description=__doc__,
    )
    p.add_argument("--steps", type=positive_int, default=2000, help="training steps per network (default 2000)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=60,
        help="mini-batch size (default 60, as in the paper); at most the 1437 training images: a larger "
        "value is an error rather than one full batch in disguise",
    )
    p.add_argument("--lr", type=positive_float, default=0.5, help="learning rate (default 0.5)")
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="optimizer (default sgd)")
    p.add_argument(
        "--placement",
        default="before",
        choices=["before", "after", "both"],
        help="batch norm before the sigmoid (the paper's placement, default), after it, or both "
        "(three networks side by side)",
    )
    p.add_argument("--eval-every", type=positive_int, default=200, help="steps between test evaluations (default 200)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed, an integer >= 0 (default 0)")
    p.add_argument(
        "--threads",
        type=nonnegative_int,
        default=1,
        help="BLAS threads (default 1: this network's matrices are small, and extra threads only add "
        "synchronization; 0 leaves the library's own setting)",
    )
    p.set_defaults(func=_main)


def _main(args) -> int:
    from ..datasets import load_digits

    data = load_digits()
    n_train = len(data[0][0])
    if args.batch_size > n_train:
        # a typo (100000 for 100) would otherwise train on one full batch per step without a word
        args.command_parser.error(
            f"argument --batch-size: {args.batch_size} is more than the {n_train} training images; "
            f"use at most {n_train} (--batch-size {n_train} trains on all of them at every step)"
        )
    with blas_threads(args.threads):
        run_demo(
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            optimizer=args.optimizer,
            placement=args.placement,
            eval_every=args.eval_every,
            seed=args.seed,
            data=data,
        )
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
