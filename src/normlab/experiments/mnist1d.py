"""MNIST-1D: logistic regression, an MLP and a CNN, with and without BN and dropout.

Greydanus ("Scaling down deep learning", 2020) reports test accuracies of
about 32 % for logistic regression, 68 % for an MLP and 94 % for a CNN on
MNIST-1D (4000 training and 1000 test signals of 40 samples, see
:func:`normlab.datasets.load_mnist1d`). This experiment trains the
reference's three networks (see :func:`build_model`):

- logistic regression: ``Dense(10, softmax)`` on the 40 inputs;
- an MLP: two hidden layers of 100 ReLU units, then ``Dense(10, softmax)``;
- a CNN: three stride-2 ``Conv1D`` layers of 25 channels with ReLU, then
  ``Dense(10, softmax)``;

each in four variants: plain; with batch normalization (on the inputs for
logistic regression, between each hidden layer's linear map and its ReLU
otherwise); with dropout (on the inputs for logistic regression, after each
hidden ReLU otherwise); with both. Training follows the reference: Adam
(learning rate 0.01), mini-batches of 100, 6000 steps, the last model kept
(no early stopping), the accuracy taken on the 1000 test signals; each
network is trained with several seeds and the table gives mean and standard
deviation.

Writes ``mnist1d.json`` and ``mnist1d.md`` (the table beside the published
figures) into ``out_dir``, and ``mnist1d.png`` (test accuracy over training).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ._common import check_positive_int, out_path, pyplot, write_json

__all__ = ["run", "build_model", "PUBLISHED", "MODELS", "VARIANTS"]

#: published test accuracies (Greydanus 2020)
PUBLISHED = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94}
VARIANTS = ("plain", "bn", "dropout", "bn+dropout")
MODELS = ("logistic", "mlp", "cnn")
MODEL_NAMES = {"logistic": "Logistic regression", "mlp": "MLP (2 x 100 ReLU)", "cnn": "CNN (3 x Conv1D 25, ReLU)"}
#: dropout rate per model
DROPOUT = {"logistic": 0.1, "mlp": 0.2, "cnn": 0.1}
VARIANT_NAMES = {"plain": "plain", "bn": "BN", "dropout": "dropout", "bn+dropout": "BN + dropout"}


def build_model(kind: str, variant: str, *, dropout: float | None = None, seed: int = 0):
    """The ``kind`` ("logistic", "mlp" or "cnn") network in ``variant`` (one of :data:`VARIANTS`).

    The CNN is the reference's ``ConvBase``, channels last: the 40 samples as
    ``(40, 1)``, three ``Conv1D(25, kernel 5, 3, 3, stride 2, padding "same")``
    with ReLU (20, 10, 5 steps), then ``Flatten`` (125) and ``Dense(10, softmax)``.
    BN goes between each convolution (then without bias) and its ReLU, dropout
    after each ReLU.
    """
    from .. import Sequential, initializers
    from ..layers import Activation, BatchNormalization, Dense

    if variant not in VARIANTS:
        raise ValueError(f"mnist1d: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    bn = "bn" in variant
    drop = "dropout" in variant
    seed = 1000 * int(seed)  # seeds 0, 1, 2, ... give disjoint per-layer seeds
    if drop:
        from ..layers import Dropout  # noqa: F401  (fails clearly if the layer is missing)
    layers = []
    rate = DROPOUT.get(kind, 0.1) if dropout is None else dropout
    if kind == "logistic":
        if bn:
            layers.append(BatchNormalization())
        if drop:
            layers.append(Dropout(rate, seed=seed + 100))
        layers.append(Dense(10, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=seed)))
    elif kind == "mlp":
        for i in range(2):
            init = initializers.GlorotUniform(seed=seed + i)
            if bn:
                layers += [Dense(100, use_bias=False, kernel_initializer=init), BatchNormalization(), Activation("relu")]
            else:
                layers.append(Dense(100, activation="relu", kernel_initializer=init))
            if drop:
                layers.append(Dropout(rate, seed=seed + 100 + i))
        layers.append(Dense(10, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=seed + 2)))
    elif kind == "cnn":
        from ..layers import Conv1D, Flatten, Reshape

        layers.append(Reshape((40, 1)))
        for i, k in enumerate((5, 3, 3)):
            init = initializers.GlorotUniform(seed=seed + i)
            if bn:
                layers += [Conv1D(25, k, strides=2, padding="same", use_bias=False, kernel_initializer=init),
                           BatchNormalization(), Activation("relu")]
            else:
                layers.append(Conv1D(25, k, strides=2, padding="same", activation="relu", kernel_initializer=init))
            if drop:
                layers.append(Dropout(rate, seed=seed + 100 + i))
        layers += [Flatten(), Dense(10, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=seed + 9))]
    else:
        raise ValueError(f"mnist1d: unknown model {kind!r}; choose one of {', '.join(MODELS)}.")
    return Sequential(layers, name=f"{kind}_{variant}")


def _train(kind, variant, data, *, steps, batch_size, learning_rate, eval_every, seed):
    from .. import optimizers
    from ..cli.demo import EvaluateEvery

    (x_tr, y_tr), (x_te, y_te) = data
    model = build_model(kind, variant, seed=seed)
    model.compile(
        optimizer=optimizers.get({"class_name": "adam", "config": {"learning_rate": learning_rate}}),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    evaluate = EvaluateEvery(x_te, y_te, eval_every, steps)
    per_epoch = math.ceil(len(x_tr) / batch_size)
    t0 = time.perf_counter()
    model.fit(
        x_tr, y_tr, batch_size=batch_size, epochs=math.ceil(steps / per_epoch), verbose=0,
        callbacks=[evaluate], seed=seed,
    )
    seconds = time.perf_counter() - t0
    train = model.evaluate(x_tr, y_tr, batch_size=1000, return_dict=True)
    test = model.evaluate(x_te, y_te, batch_size=1000, return_dict=True)
    return {
        "train_accuracy": float(train["accuracy"]),
        "test_accuracy": float(test["accuracy"]),
        "best_test_accuracy": float(max(a for _, a in evaluate.curve)),
        "curve": [[int(s), float(a)] for s, a in evaluate.curve],
        "seconds": seconds,
    }


def run(
    *,
    steps: int = 6000,
    batch_size: int = 100,
    learning_rate: float = 1e-2,
    eval_every: int | None = None,
    models=MODELS,
    variants=VARIANTS,
    n_seeds: int = 3,
    out_dir=None,
    seed: int = 0,
    plots: bool = True,
    print_fn=print,
) -> dict:
    """Train every (model, variant) pair with ``n_seeds`` seeds; write the table and the curves.

    Parameters
    ----------
    steps : int, default 6000
        Adam steps per network (the reference trains 6000 steps of 100).
    batch_size : int, default 100
    learning_rate : float, default 0.01
        Adam's learning rate (the reference's).
    eval_every : int, optional
        Steps between test evaluations for the curves; default ``steps // 20``.
    models, variants : sequences of str
        Subsets of :data:`MODELS` ("logistic", "mlp", "cnn") and :data:`VARIANTS`.
    n_seeds : int, default 3
        Each network is trained with seeds ``seed, seed + 1, ...`` (weights,
        dropout masks, shuffling); the table gives the mean and standard
        deviation of the final test accuracies.
    out_dir : str or Path, default "normlab-results"
    seed : int, default 0
    plots : bool, default True
    print_fn : callable, default print

    Returns
    -------
    dict
        ``{"config", "results": {model: {variant: {...}}}, "published", "files"}``;
        each result holds ``test_accuracy`` (mean over seeds),
        ``test_accuracy_std``, ``test_accuracies`` (per seed), ``train_accuracy``
        (mean), ``curve`` (mean test accuracy against steps) and ``seconds``.
    """
    from ..datasets import load_mnist1d

    who = "mnist1d.run"
    steps = check_positive_int(steps, "steps", who)
    batch_size = check_positive_int(batch_size, "batch_size", who)
    n_seeds = check_positive_int(n_seeds, "n_seeds", who)
    if eval_every is None:
        eval_every = max(1, steps // 20)
    eval_every = check_positive_int(eval_every, "eval_every", who)
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"{who}: unknown variant {v!r}; choose among {', '.join(VARIANTS)}.")
    for m in models:
        if m not in MODELS:
            raise ValueError(f"{who}: unknown model {m!r}; choose among {', '.join(MODELS)}.")
    data = load_mnist1d()
    (x_tr, _), (x_te, _) = data
    out = out_path(out_dir)
    seeds = [seed + i for i in range(n_seeds)]
    config = {
        "n_train": int(len(x_tr)),
        "n_test": int(len(x_te)),
        "steps": steps,
        "batch_size": batch_size,
        "optimizer": "adam",
        "learning_rate": learning_rate,
        "dropout": {m: DROPOUT[m] for m in models},
        "seed": seed,
        "seeds": seeds,
    }
    print_fn(
        f"mnist1d: {len(x_tr)} train / {len(x_te)} test signals, Adam lr={learning_rate}, "
        f"batches of {batch_size}, {steps} steps per network, seeds {', '.join(map(str, seeds))}"
    )
    results: dict = {}
    for kind in models:
        results[kind] = {}
        for v in variants:
            runs = [
                _train(kind, v, data, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                       eval_every=eval_every, seed=s)
                for s in seeds
            ]
            test = np.array([r["test_accuracy"] for r in runs])
            curves = np.array([[a for _, a in r["curve"]] for r in runs])
            r = {
                "test_accuracy": float(test.mean()),
                "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
                "test_accuracies": test.tolist(),
                "train_accuracy": float(np.mean([r["train_accuracy"] for r in runs])),
                "curve": [[int(st), float(a)] for (st, _), a in zip(runs[0]["curve"], curves.mean(axis=0))],
                "seconds": float(sum(r["seconds"] for r in runs)),
            }
            results[kind][v] = r
            print_fn(
                f"  {MODEL_NAMES[kind]:<22} {VARIANT_NAMES[v]:<13} test {r['test_accuracy']:.3f} "
                f"+- {r['test_accuracy_std']:.3f} ({', '.join(f'{a:.3f}' for a in test)}; "
                f"train {r['train_accuracy']:.3f}, {r['seconds']:.1f} s)"
            )
    out_all = {"config": config, "results": results, "published": PUBLISHED}
    files = {"json": out / "mnist1d.json", "report": out / "mnist1d.md"}
    write_json(files["json"], out_all)
    if plots:
        files["png"] = out / "mnist1d.png"
        plot_curves(results, files["png"])
    files["report"].write_text(report(out_all, png=files.get("png")))
    out_all["files"] = {k: str(v) for k, v in files.items()}
    print_fn(table(out_all))
    print_fn(f"wrote {', '.join(str(v) for v in files.values())}")
    return out_all


def _cell(r: dict) -> str:
    if len(r.get("test_accuracies", [])) > 1:
        return f"{100 * r['test_accuracy']:.1f} ± {100 * r['test_accuracy_std']:.1f} %"
    return f"{100 * r['test_accuracy']:.1f} %"


def table(res: dict) -> str:
    results = res["results"]
    variants = [v for v in VARIANTS if any(v in r for r in results.values())]
    head = "| model | " + " | ".join(VARIANT_NAMES[v] for v in variants) + " | published |"
    lines = [head, "| --- | " + " | ".join("---:" for _ in variants) + " | ---: |"]
    for kind in MODELS:
        if kind in results:
            cells = [_cell(results[kind][v]) if v in results[kind] else "" for v in variants]
        else:
            cells = ["not run"] + [""] * (len(variants) - 1)
        lines.append(f"| {MODEL_NAMES[kind]} | " + " | ".join(cells) + f" | {100 * PUBLISHED[kind]:.0f} % |")
    return "\n".join(lines)


def report(res: dict, png=None) -> str:
    cfg = res["config"]
    lines = [
        "# MNIST-1D: logistic regression, MLP and CNN, with and without BN and dropout",
        "",
        f"Command: `normlab experiment mnist1d --steps {cfg['steps']} --seed {cfg['seed']} "
        f"--seeds {len(cfg.get('seeds', [cfg['seed']]))}`",
        "",
        f"Data: MNIST-1D as published ({cfg['n_train']} training, {cfg['n_test']} test signals of 40 samples). "
        f"Training: Adam (learning rate {cfg['learning_rate']}), mini-batches of {cfg['batch_size']}, "
        f"{cfg['steps']} steps, the last model kept. Dropout rates "
        + ", ".join(f"{MODEL_NAMES[m]} {r}" for m, r in cfg["dropout"].items())
        + " (on the inputs of logistic regression, after each hidden ReLU otherwise); BN on the inputs of "
        "logistic regression, between each hidden layer's linear map and its ReLU otherwise.",
        "",
        f"Test accuracy on the 1000 test signals, mean ± standard deviation over the seeds "
        f"{', '.join(map(str, cfg.get('seeds', [cfg['seed']])))} (weights, dropout masks and shuffling):",
        "",
        table(res),
        "",
        "Train accuracy, for the over-fitting it shows:",
        "",
    ]
    results = res["results"]
    for kind, rs in results.items():
        lines.append(
            f"- {MODEL_NAMES[kind]}: "
            + ", ".join(f"{VARIANT_NAMES[v]} {100 * r['train_accuracy']:.1f} %" for v, r in rs.items())
        )
    lines += ["", "Per seed:", ""]
    for kind, rs in results.items():
        for v, r in rs.items():
            lines.append(
                f"- {MODEL_NAMES[kind]}, {VARIANT_NAMES[v]}: "
                + ", ".join(f"{100 * a:.1f} %" for a in r.get("test_accuracies", [r["test_accuracy"]]))
            )
    if png is not None:
        lines += ["", f"![test accuracy during training]({png.name if hasattr(png, 'name') else png})"]
    lines.append("")
    return "\n".join(lines)


def plot_curves(results: dict, path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (kind, rs) in zip(axes[0], results.items()):
        for v, r in rs.items():
            c = np.asarray(r["curve"])
            ax.plot(c[:, 0], c[:, 1], label=VARIANT_NAMES[v])
        ax.axhline(PUBLISHED[kind], color="black", ls=":", lw=1, label=f"published {100 * PUBLISHED[kind]:.0f} %")
        ax.set_title(MODEL_NAMES[kind])
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
