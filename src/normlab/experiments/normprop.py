"""Normalization propagation beside batch norm, weight normalization and SELU, on one network and data set.

The normalization notes name four ways of keeping a network's activations
normalized; this experiment trains each on the same problem:

``plain``
    ``Dense(relu)`` layers, Glorot initialization: the reference.
``batchnorm``
    ``Dense(use_bias=False) -> BatchNormalization -> relu`` (Ioffe and Szegedy 2015).
``weightnorm``
    ``WeightNormalization(Dense(relu))`` with the data-dependent
    initialization (Salimans and Kingma 2016).
``selu``
    ``Dense(selu, lecun_normal)`` (Klambauer et al. 2017).
``normprop``
    ``NormPropDense(relu)`` (Arpit et al. 2016): each pre-activation divided
    by its weight row's norm, the ReLU output centred and scaled by the
    analytic constants ``sqrt(1/(2 pi))`` and ``sqrt((1/2)(1 - 1/pi))``;
    nothing computed from the batch.

Every network has ``hidden`` hidden layers and a ``Dense(10, softmax)``
output, starts from the same seed and sees the same mini-batches (one
shuffled order, drawn from ``seed``) through ``train_on_batch``, with the
same optimizer (SGD with momentum 0.9). The inputs are standardized with the
training set's mean and standard deviation, as NormProp requires of its
data (the paper's first step); the other networks get the same inputs.

Cost per step. The networks are trained in rounds of ``eval_every`` steps,
one network after another within each round, so that the load of the
machine falls on all of them alike; each round's wall time per step is
recorded, and the report gives the median over rounds as a ratio to batch
norm's (the same run, interleaved round by round).

Writes ``normprop.png`` (test accuracy over steps) and ``normprop.json``
into ``out_dir``.
"""

from __future__ import annotations

import time

import numpy as np

from ._common import check_positive_int, out_path, pyplot, write_json

__all__ = ["run", "build_model", "MODELS"]

MODELS = ("plain", "batchnorm", "weightnorm", "selu", "normprop")


def build_model(kind: str, *, hidden=(100, 100), learning_rate: float = 0.01, seed: int = 0):
    """A compiled network of ``kind`` (one of :data:`MODELS`) with ``hidden`` hidden layers."""
    from .. import Sequential, initializers, optimizers
    from ..layers import Activation, BatchNormalization, Dense, NormPropDense, WeightNormalization

    if kind not in MODELS:
        raise ValueError(f"normprop: unknown model {kind!r}; choose from {', '.join(MODELS)}.")
    layers = []
    for i, units in enumerate(hidden):
        glorot = initializers.GlorotUniform(seed=seed + i)
        if kind == "plain":
            layers.append(Dense(units, activation="relu", kernel_initializer=glorot))
        elif kind == "batchnorm":
            layers += [Dense(units, use_bias=False, kernel_initializer=glorot), BatchNormalization(),
                       Activation("relu")]
        elif kind == "weightnorm":
            layers.append(WeightNormalization(Dense(units, activation="relu", kernel_initializer=glorot)))
        elif kind == "selu":
            layers.append(Dense(units, activation="selu", kernel_initializer=initializers.LecunNormal(seed=seed + i)))
        else:
            layers.append(NormPropDense(units, kernel_initializer=glorot))
    layers.append(Dense(10, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=seed + 99)))
    model = Sequential(layers, name=kind)
    model.compile(optimizer=optimizers.SGD(learning_rate, momentum=0.9), loss="sparse_categorical_crossentropy")
    return model


def _standardized_digits():
    from .. import datasets

    (x, y), (xt, yt) = datasets.load_digits()
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant pixels (always 0 in the training set) stay 0
    return ((x - mean) / std).astype(np.float32), y, ((xt - mean) / std).astype(np.float32), yt


def run(
    steps: int = 3000,
    *,
    eval_every: int = 25,
    batch_size: int = 32,
    learning_rate: float = 0.01,
    hidden=(100, 100),
    models=MODELS,
    out_dir=None,
    plots: bool = True,
    seed: int = 0,
    print_fn=print,
) -> dict:
    """Train every network of ``models`` for ``steps`` steps; test accuracy every ``eval_every`` steps.

    Returns ``{"config", "steps", "accuracy": {model: [...]}, "seconds_per_step": {model: [...]},
    "summary": {model: {"final_accuracy", "best_accuracy", "cost_vs_batchnorm"}}}``.
    """
    who = "normprop.run"
    steps = check_positive_int(steps, "steps", who)
    eval_every = min(check_positive_int(eval_every, "eval_every", who), steps)
    batch_size = check_positive_int(batch_size, "batch_size", who)
    models = tuple(models)
    for kind in models:
        if kind not in MODELS:
            raise ValueError(f"{who}: unknown model {kind!r}; choose from {', '.join(MODELS)}.")
    x, y, xt, yt = _standardized_digits()
    if batch_size > len(x):
        raise ValueError(f"{who}: 'batch_size' {batch_size} is more than the {len(x)} training samples.")
    out = out_path(out_dir)
    rng = np.random.default_rng(seed)
    per_pass = len(x) // batch_size  # full batches only: every step has the same cost
    order = np.concatenate([rng.permutation(len(x)) for _ in range(-(-steps // per_pass))])

    nets = {kind: build_model(kind, hidden=hidden, learning_rate=learning_rate, seed=seed) for kind in models}
    for net in nets.values():
        net.build((None, x.shape[1]), seed=seed)

    def accuracy(net):
        return float(np.mean(np.argmax(net.predict(xt, batch_size=512, verbose=0), axis=1) == yt))

    acc = {k: [accuracy(n)] for k, n in nets.items()}
    per_step = {k: [] for k in nets}
    done = [0]
    while done[-1] < steps:
        lo, hi = done[-1], min(done[-1] + eval_every, steps)
        for kind, net in nets.items():
            t0 = time.perf_counter()
            for s in range(lo, hi):
                start = (s // per_pass) * len(x) + (s % per_pass) * batch_size
                idx = order[start:start + batch_size]
                net.train_on_batch(x[idx], y[idx])
            per_step[kind].append((time.perf_counter() - t0) / (hi - lo))
            acc[kind].append(accuracy(net))
        done.append(hi)
    steps_axis = done
    med = {k: float(np.median(v)) for k, v in per_step.items()}
    summary = {
        k: {
            "final_accuracy": acc[k][-1],
            "best_accuracy": max(acc[k]),
            "median_ms_per_step": 1e3 * med[k],
            "cost_vs_batchnorm": (med[k] / med["batchnorm"]) if "batchnorm" in med else None,
        }
        for k in nets
    }
    for k, s in summary.items():
        ratio = "" if s["cost_vs_batchnorm"] is None else f", {s['cost_vs_batchnorm']:.2f} x BN's time per step"
        print_fn(f"{k}: test accuracy {100 * s['final_accuracy']:.1f} % after {steps} steps "
                 f"(best {100 * s['best_accuracy']:.1f} %){ratio}")
    data = {
        "config": {"steps": steps, "eval_every": eval_every, "batch_size": batch_size,
                   "learning_rate": learning_rate, "hidden": list(hidden), "seed": seed, "dataset": "digits",
                   "n_train": len(x), "optimizer": "SGD(momentum=0.9)"},
        "steps": steps_axis,
        "accuracy": acc,
        "seconds_per_step": per_step,
        "summary": summary,
    }
    write_json(out / "normprop.json", data)
    if plots:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for k in nets:  # log steps: the early differences are the interesting ones
            ax.semilogx(steps_axis[1:], 100 * np.asarray(acc[k][1:]), label=k, lw=1.3)
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"digits, {len(hidden)} x {hidden[0]} hidden units, SGD lr {learning_rate:g}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "normprop.png", dpi=72)
        plt.close(fig)
    return data
