"""The L2-strength study of scikit-learn's ``plot_mlp_alpha`` example, in normlab.

scikit-learn's "Varying regularization in Multi-layer Perceptron" trains
``MLPClassifier(hidden_layer_sizes=(10, 10), alpha=alpha)`` (ReLU units, one
logistic output, L-BFGS to convergence) for ``alpha`` in
``np.logspace(-1, 1, 5)`` on three 2-D toy sets (moons, circles, a linearly
separable pair of blobs) and draws each decision surface with its test
accuracy. Here the same networks are built from normlab layers and trained
full batch with Adam; rows of the figure are data sets, columns are L2
strengths (after a first column showing the data).

Converting scikit-learn's alpha
-------------------------------
scikit-learn's MLP minimizes, on a batch of ``n`` samples,
``mean cross-entropy + 0.5 * alpha * sum(W ** 2) / n`` over the weight
matrices (biases are not penalized). normlab's ``L2(l2)`` kernel regularizer
adds ``l2 * sum(W ** 2)`` to the mean loss of every batch (no one half, not
divided by the batch size), so the same objective is::

    l2 = alpha / (2 * n)

with ``n`` the batch size; trained full batch, as here, ``n`` is the number
of training points (60 with the defaults): ``alpha = 1`` is ``L2(1 / 120)``.
The penalty goes on each ``Dense`` kernel only (``kernel_regularizer``).

The networks train in float64, as scikit-learn's do. In float32 the result
would depend on whether numba is installed: its sigmoid (a vectorized
``exp``, within 3 ulp) and NumPy's (``0.5 tanh(x / 2) + 0.5``) differ in
the last bits, and over 3,000 steps that moved one test point of one cell.
In float64 both paths give the same run, bit for bit.

Writes ``regularization.png`` and ``regularization.json`` into ``out_dir``.
"""

from __future__ import annotations

import time

import numpy as np

from ._common import check_positive_int, out_path, pyplot, write_json

__all__ = ["run", "sklearn_alpha_to_l2", "ALPHAS"]

#: the example's strengths, ``np.logspace(-1, 1, 5)``
ALPHAS = tuple(float(a) for a in np.logspace(-1, 1, 5))
HIDDEN = (10, 10)


def sklearn_alpha_to_l2(alpha: float, batch_size: int) -> float:
    """normlab ``L2(l2)`` strength equal to scikit-learn's MLP ``alpha`` on batches of ``batch_size``."""
    return float(alpha) / (2.0 * batch_size)


def _datasets():
    from .. import datasets

    return {
        "moons": datasets.load_moons(),
        "circles": datasets.load_circles(),
        "linearly separable": datasets.load_linearly_separable(),
    }


def build_mlp(l2: float, *, hidden=HIDDEN, seed: int = 0, dtype: str = "float64"):
    """``hidden`` ReLU layers and one sigmoid output, each kernel with ``L2(l2)``, in ``dtype``."""
    from .. import Sequential, initializers, regularizers
    from ..layers import Dense

    layers = []
    for i, units in enumerate(list(hidden) + [1]):
        layers.append(
            Dense(
                units,
                activation="relu" if i < len(hidden) else "sigmoid",
                kernel_initializer=initializers.GlorotUniform(seed=seed + i),
                kernel_regularizer=regularizers.L2(l2) if l2 > 0 else None,
                # the first layer's dtype carries through the rest of the network
                dtype=dtype if i == 0 else None,
            )
        )
    return Sequential(layers, name=f"mlp_l2_{l2:g}")


def run(
    *,
    alphas=ALPHAS,
    steps: int = 3000,
    learning_rate: float = 0.01,
    out_dir=None,
    seed: int = 0,
    plots: bool = True,
    compare_sklearn: bool = True,
    print_fn=print,
) -> dict:
    """Train one MLP per (data set, alpha); draw the decision surfaces.

    Parameters
    ----------
    alphas : sequence of float, default :data:`ALPHAS`
        scikit-learn ``alpha`` values, converted with :func:`sklearn_alpha_to_l2`.
    steps : int, default 3000
        Full-batch Adam steps per network.
    learning_rate : float, default 0.01
    out_dir : str or Path, default "normlab-results"
    seed : int, default 0
        Initial weights (the data sets are the example's, fixed).
    plots : bool, default True
    compare_sklearn : bool, default True
        Also fit the example's own ``MLPClassifier(solver="lbfgs", alpha=alpha,
        random_state=1, max_iter=2000, early_stopping=True)`` on the same data
        and record its test accuracy (``"sklearn_test_accuracy"``; drawn in
        grey in each panel's upper left corner).
    print_fn : callable, default print

    Returns
    -------
    dict
        ``{"config", "datasets": {name: {"train_accuracy", "test_accuracy",
        ["sklearn_test_accuracy"]}}, "files"}``, also in ``regularization.json``.
    """
    from .. import optimizers

    who = "regularization.run"
    steps = check_positive_int(steps, "steps", who)
    alphas = [float(a) for a in alphas]
    if not alphas or any(not a >= 0 for a in alphas):
        raise ValueError(f"{who}: 'alphas' must be a non-empty list of numbers >= 0, got {alphas!r}.")
    data = _datasets()
    out = out_path(out_dir)
    n_train = len(next(iter(data.values()))[0][0])
    config = {
        "alphas": alphas,
        "l2": [sklearn_alpha_to_l2(a, n_train) for a in alphas],
        "hidden": list(HIDDEN),
        "activation": "relu",
        "optimizer": "adam",
        "learning_rate": learning_rate,
        "steps": steps,
        "batch_size": "full batch",
        "seed": seed,
        "dtype": "float64",
    }
    print_fn(
        f"regularization: MLP {HIDDEN} relu, full-batch Adam lr={learning_rate}, {steps} steps, "
        f"alpha in {', '.join(f'{a:g}' for a in alphas)} (L2 = alpha / (2 n), n = {n_train})"
    )
    results = {"config": config, "datasets": {}}
    models = {}
    t0 = time.perf_counter()
    for name, ((x_tr, y_tr), (x_te, y_te)) in data.items():
        tr_acc, te_acc, losses = [], [], []
        for a in alphas:
            model = build_mlp(sklearn_alpha_to_l2(a, len(x_tr)), seed=seed)
            model.compile(
                optimizer=optimizers.get({"class_name": "adam", "config": {"learning_rate": learning_rate}}),
                loss="binary_crossentropy",
                metrics=["accuracy"],
            )
            hist = model.fit(x_tr, y_tr, batch_size=len(x_tr), epochs=steps, verbose=0, seed=seed, shuffle=False)
            tr_acc.append(model.evaluate(x_tr, y_tr, return_dict=True)["accuracy"])
            te_acc.append(model.evaluate(x_te, y_te, return_dict=True)["accuracy"])
            losses.append(float(hist.history["loss"][-1]))
            models[(name, a)] = model
        results["datasets"][name] = {
            "n_train": int(len(x_tr)),
            "n_test": int(len(x_te)),
            "train_accuracy": [float(v) for v in tr_acc],
            "test_accuracy": [float(v) for v in te_acc],
            "final_loss": losses,
        }
        print_fn(
            f"  {name:>18}: test accuracy "
            + "  ".join(f"alpha={a:g}: {v:.2f}" for a, v in zip(alphas, te_acc))
        )
        if compare_sklearn:
            sk = _sklearn_scores(x_tr, y_tr, x_te, y_te, alphas)
            if sk is not None:
                results["datasets"][name]["sklearn_test_accuracy"] = sk
                print_fn(f"  {'(scikit-learn)':>18}  " + "  ".join(f"alpha={a:g}: {v:.2f}" for a, v in zip(alphas, sk)))
    results["seconds"] = time.perf_counter() - t0
    files = {"json": out / "regularization.json"}
    if plots:
        files["png"] = out / "regularization.png"
        plot_surfaces(data, models, alphas, results, files["png"])
    write_json(files["json"], {k: results[k] for k in ("config", "datasets", "seconds")})
    results["files"] = {k: str(v) for k, v in files.items()}
    print_fn(f"wrote {', '.join(str(v) for v in files.values())}")
    return results


def _sklearn_scores(x_tr, y_tr, x_te, y_te, alphas):
    """Test accuracies of the example's own MLPClassifier, or None without scikit-learn."""
    try:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None
    scores = []
    for a in alphas:
        clf = MLPClassifier(
            solver="lbfgs", alpha=a, random_state=1, max_iter=2000, early_stopping=True, hidden_layer_sizes=HIDDEN
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x_tr, y_tr)
        scores.append(float(clf.score(x_te, y_te)))
    return scores


def plot_surfaces(data, models, alphas, results, path, h: float = 0.02) -> None:
    """Rows: data sets; columns: the data, then one decision surface per alpha."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    cm = plt.cm.RdBu
    cm_bright = ListedColormap(["#FF0000", "#0000FF"])
    nrows, ncols = len(data), len(alphas) + 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for r, (name, ((x_tr, y_tr), (x_te, y_te))) in enumerate(data.items()):
        x_all = np.concatenate([x_tr, x_te])
        x_min, x_max = x_all[:, 0].min() - 0.5, x_all[:, 0].max() + 0.5
        y_min, y_max = x_all[:, 1].min() - 0.5, x_all[:, 1].max() + 0.5
        xx, yy = np.meshgrid(np.arange(x_min, x_max, h), np.arange(y_min, y_max, h))
        grid = np.c_[xx.ravel(), yy.ravel()].astype(np.float32)
        for c in range(ncols):
            ax = axes[r, c]
            if c > 0:
                a = alphas[c - 1]
                z = models[(name, a)].predict(grid, batch_size=4096)[:, 0].reshape(xx.shape)
                ax.contourf(xx, yy, z, cmap=cm, alpha=0.8)
                acc = results["datasets"][name]["test_accuracy"][c - 1]
                ax.text(xx.max() - 0.3, yy.min() + 0.3, f"{acc:.2f}".lstrip("0"), size=13, ha="right")
                sk = results["datasets"][name].get("sklearn_test_accuracy")
                if sk is not None:
                    ax.text(xx.min() + 0.3, yy.max() - 0.3, f"sklearn {sk[c - 1]:.2f}".replace(" 0.", " ."),
                            size=8, ha="left", va="top", color="0.25")
                if r == 0:
                    ax.set_title(f"alpha {a:.2f}\nL2({sklearn_alpha_to_l2(a, len(x_tr)):.2g})", fontsize=10)
            elif r == 0:
                ax.set_title("Input data", fontsize=10)
            ax.scatter(x_tr[:, 0], x_tr[:, 1], c=y_tr, cmap=cm_bright, edgecolors="black", s=25)
            ax.scatter(x_te[:, 0], x_te[:, 1], c=y_te, cmap=cm_bright, alpha=0.6, edgecolors="black", s=25)
            ax.set_xlim(xx.min(), xx.max())
            ax.set_ylim(yy.min(), yy.max())
            ax.set_xticks(())
            ax.set_yticks(())
            if c == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
