"""The notes' optimizer pictures: every normlab optimizer on three 2-D surfaces, and the decay schedules.

Each optimizer starts from the same point of each surface and takes
``steps`` steps through ``optimizer.apply_gradients`` on a plain NumPy array
``theta = (x, y)``, with the exact gradient of the surface:

``quadratic``
    ``f = (x^2 + 25 y^2) / 2``: condition number 25, the notes' badly
    conditioned bowl. Plain SGD must keep ``lr < 2/25`` and then crawls
    along ``x``; momentum and the per-coordinate rates of AdaGrad, RMSProp
    and Adam do not.
``rosenbrock``
    ``f = (1 - x)^2 + 100 (y - x^2)^2``, a curved valley with its minimum
    at ``(1, 1)``.
``saddle``
    ``f = x^2 - y^2 + y^4 / 4``: a saddle point at the origin between two
    minima at ``(0, +-sqrt(2))`` (``f = -1``); started almost on the ridge
    (``y = 10^-3``), a method escapes only as fast as it amplifies the small
    ``y`` component of the gradient.

Learning rates. An optimizer's good rate differs by orders of magnitude
from one surface to the next, so each (optimizer, surface) pair gets the
rate from ``LEARNING_RATES`` (half decades from 1e-3 to 1) that reaches
``f - f* < 1e-3`` for good in the fewest steps (if none does, the lowest final
``f - f*``; a diverging run is never chosen); the figures give it. Other hyperparameters are normlab's
(Keras's) defaults, momentum 0.9 where the method has one.

A third figure draws the learning-rate schedules of
:mod:`normlab.optim.schedules` side by side, beside the notes' linear
decay ``lr_k = (1 - k/tau) lr_0 + (k/tau) lr_tau`` until ``tau`` (which is
``PolynomialDecay(lr_0, tau, lr_tau, power=1)``).

Writes ``optimizers_paths.png``, ``optimizers_loss.png``,
``optimizers_schedules.png`` and ``optimizers.json`` into ``out_dir``, and
with ``gif=True`` (``--gif``) ``optimizers_quadratic.gif``, the paths on the
quadratic drawn step by step.
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import numpy as np

from ._common import check_positive_int, out_path, pyplot, write_json

__all__ = ["run", "SURFACES", "OPTIMIZERS", "LEARNING_RATES", "make_optimizer", "schedules"]

LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


class Surface(NamedTuple):
    f: Callable
    grad: Callable
    start: tuple
    minimum: float
    extent: tuple  # (xmin, xmax, ymin, ymax) of the contour plot
    title: str


def _quad(t):
    return 0.5 * (t[0] ** 2 + 25.0 * t[1] ** 2)


def _quad_grad(t):
    return np.array([t[0], 25.0 * t[1]])


def _rosen(t):
    return (1.0 - t[0]) ** 2 + 100.0 * (t[1] - t[0] ** 2) ** 2


def _rosen_grad(t):
    return np.array([-2.0 * (1.0 - t[0]) - 400.0 * t[0] * (t[1] - t[0] ** 2), 200.0 * (t[1] - t[0] ** 2)])


def _saddle(t):
    return t[0] ** 2 - t[1] ** 2 + 0.25 * t[1] ** 4


def _saddle_grad(t):
    return np.array([2.0 * t[0], -2.0 * t[1] + t[1] ** 3])


SURFACES = {
    "quadratic": Surface(_quad, _quad_grad, (-4.5, 1.5), 0.0, (-5, 5, -2, 2), "f = (x² + 25 y²) / 2"),
    "rosenbrock": Surface(_rosen, _rosen_grad, (-1.5, 2.0), 0.0, (-2, 2, -1, 3), "Rosenbrock"),
    "saddle": Surface(_saddle, _saddle_grad, (1.5, 1e-3), -1.0, (-2, 2, -2.2, 2.2), "f = x² − y² + y⁴/4"),
}


def _optimizers():
    from .. import optimizers as O

    return {
        "SGD": lambda lr: O.SGD(lr),
        "momentum": lambda lr: O.SGD(lr, momentum=0.9),
        "Nesterov": lambda lr: O.SGD(lr, momentum=0.9, nesterov=True),
        "AdaGrad": lambda lr: O.Adagrad(lr),
        "RMSProp": lambda lr: O.RMSprop(lr),
        "RMSProp+Nesterov": lambda lr: O.RMSprop(lr, momentum=0.9, nesterov=True),
        "Adam": lambda lr: O.Adam(lr),
        "AMSGrad": lambda lr: O.Adam(lr, amsgrad=True),
        "AdamW": lambda lr: O.AdamW(lr),
        "Nadam": lambda lr: O.Nadam(lr),
        "Lion": lambda lr: O.Lion(lr),
    }


#: the optimizers, each built by ``make_optimizer(name, lr)``
OPTIMIZERS = tuple(
    ("SGD", "momentum", "Nesterov", "AdaGrad", "RMSProp", "RMSProp+Nesterov", "Adam", "AMSGrad", "AdamW", "Nadam",
     "Lion")
)


def make_optimizer(name: str, learning_rate: float):
    """A fresh normlab optimizer of ``OPTIMIZERS`` with ``learning_rate``."""
    return _optimizers()[name](learning_rate)


def trajectory(surface: Surface, optimizer, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(path, loss)``: ``steps + 1`` points ``theta_k`` and ``f(theta_k)``, via ``apply_gradients``.

    Stops early (the rest NaN) once the iterate is non-finite or beyond 1e6.
    """
    theta = np.array(surface.start, dtype=np.float64)
    path = np.full((steps + 1, 2), np.nan)
    path[0] = theta
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, steps + 1):
            optimizer.apply_gradients([(surface.grad(theta), theta)])
            if not np.all(np.isfinite(theta)) or np.abs(theta).max() > 1e6:
                break
            path[k] = theta
        loss = np.array([surface.f(p) if np.all(np.isfinite(p)) else np.nan for p in path])
    return path, loss


#: a run has converged once ``f - f*`` is below this
TOLERANCE = 1e-3


def steps_to(gap: np.ndarray, tol: float = TOLERANCE) -> int | None:
    """First step from which ``gap`` stays below ``tol`` to the end, or None.

    "Stays": a method that touches the tolerance and then oscillates above
    it (RMSProp at a constant rate) has not converged.
    """
    above = np.flatnonzero(~(np.isfinite(gap) & (gap < tol)))
    if above.size == 0:
        return 0
    k = int(above[-1]) + 1
    return k if k < len(gap) else None


def _score(loss: np.ndarray, minimum: float) -> tuple:
    """Sort key of a run: converged runs by their steps to :data:`TOLERANCE`, the others by their final gap."""
    gap = loss - minimum
    if not np.all(np.isfinite(gap)):
        return (2, math.inf)
    k = steps_to(gap)
    return (0, k) if k is not None else (1, float(gap[-1]))


def schedules(steps: int, lr0: float = 0.1) -> dict:
    """The decay forms drawn side by side: ``{label: learning rate at steps 0 .. steps - 1}``."""
    from ..optim import schedules as S

    tau = max(1, int(0.8 * steps))
    forms = {
        "constant": None,
        "linear until τ (notes)": S.PolynomialDecay(lr0, tau, lr0 / 100, power=1.0),
        "polynomial, power 2": S.PolynomialDecay(lr0, steps, lr0 / 100, power=2.0),
        "exponential": S.ExponentialDecay(lr0, max(1, steps // 5), 0.5),
        "exponential, staircase": S.ExponentialDecay(lr0, max(1, steps // 5), 0.5, staircase=True),
        "inverse time": S.InverseTimeDecay(lr0, max(1, steps // 10), 1.0),
        "piecewise constant": S.PiecewiseConstantDecay([steps // 2, 3 * steps // 4], [lr0, lr0 / 10, lr0 / 100]),
        "cosine": S.CosineDecay(lr0, steps),
        "cosine with warm-up": S.CosineDecay(0.0, steps - max(1, steps // 10), warmup_target=lr0,
                                             warmup_steps=max(1, steps // 10)),
        "cosine restarts (SGDR)": S.CosineDecayRestarts(lr0, max(1, steps // 7)),
    }
    out = {}
    for label, sched in forms.items():
        out[label] = [lr0] * steps if sched is None else [float(sched(k)) for k in range(steps)]
    return out


def run(
    steps: int = 500,
    *,
    learning_rates=LEARNING_RATES,
    optimizers=OPTIMIZERS,
    surfaces=tuple(SURFACES),
    out_dir=None,
    plots: bool = True,
    gif: bool = False,
    seed: int = 0,
    print_fn=print,
) -> dict:
    """Run every optimizer on every surface, pick each one's learning rate, write the figures.

    ``gif=True`` also writes ``optimizers_quadratic.gif``: the paths on the
    quadratic drawn step by step (needs Pillow, which matplotlib installs).

    ``seed`` is accepted for a uniform command line; nothing here is random.
    Returns ``{"config", "results": {surface: {optimizer: {"learning_rate",
    "steps_to_tolerance", "final_gap", "path", "loss"}}}, "schedules", "seconds"}``
    (``optimizers.json`` holds all but the paths, the loss curves and the
    schedules' values).
    """
    steps = check_positive_int(steps, "steps", "optimizers.run")
    unknown = [o for o in optimizers if o not in OPTIMIZERS] + [s for s in surfaces if s not in SURFACES]
    if unknown:
        raise ValueError(f"optimizers.run: unknown optimizer or surface {unknown[0]!r}; known: "
                         f"{', '.join(OPTIMIZERS + tuple(SURFACES))}.")
    out = out_path(out_dir)
    t0 = time.perf_counter()
    results: dict = {}
    for sname in surfaces:
        surface = SURFACES[sname]
        results[sname] = {}
        for oname in optimizers:
            best = None
            for lr in learning_rates:
                path, loss = trajectory(surface, make_optimizer(oname, lr), steps)
                score = _score(loss, surface.minimum)
                if best is None or score < best[0]:
                    best = (score, lr, path, loss)
            _, lr, path, loss = best
            gap = loss - surface.minimum
            results[sname][oname] = {
                "learning_rate": lr,
                "steps_to_tolerance": steps_to(gap),
                "final_gap": float(gap[-1]) if np.isfinite(gap[-1]) else math.inf,
                "path": path,
                "loss": loss,
            }
        line = ", ".join(f"{o} {results[sname][o]['final_gap']:.2g}" for o in optimizers)
        print_fn(f"{sname}: f - f* after {steps} steps: {line}")
    sched = schedules(steps)
    data = {
        "config": {"steps": steps, "learning_rates": list(learning_rates), "optimizers": list(optimizers),
                   "tolerance": TOLERANCE,
                   "surfaces": {s: {"start": list(SURFACES[s].start), "minimum": SURFACES[s].minimum}
                                for s in surfaces}},
        "results": results,
        "schedules": sched,
        "seconds": time.perf_counter() - t0,
    }
    # the file keeps the summary (the paths and loss curves are in the returned dict and the plots)
    slim = {s: {o: {k: v for k, v in r.items() if k not in ("path", "loss")} for o, r in res.items()}
            for s, res in results.items()}
    write_json(out / "optimizers.json", {**data, "results": slim, "schedules": sorted(sched)})
    if plots:
        _plot(results, sched, steps, out)
    if gif and "quadratic" in results:
        _gif(results["quadratic"], out / "optimizers_quadratic.gif")
    return data


def _gif(res: dict, path, frames: int = 40, last_step: int = 160) -> None:
    """The paths on the quadratic, step by step up to ``last_step`` (light: at most 40 frames, 90 dpi)."""
    plt = pyplot()
    from matplotlib.animation import FuncAnimation, PillowWriter

    s = SURFACES["quadratic"]
    x0, x1, y0, y1 = s.extent
    gx, gy = np.meshgrid(np.linspace(x0, x1, 120), np.linspace(y0, y1, 120))
    fig, ax = plt.subplots(figsize=(5.6, 2.8))
    ax.contour(gx, gy, np.log10(s.f((gx, gy)) + 1e-3), levels=14, colors="0.8", linewidths=0.5)
    names = list(res)
    lines = {n: ax.plot([], [], "-" if n in ("SGD", "momentum", "Nesterov") else "--", lw=1.1,
                        color=(plt.get_cmap("tab10")(i) if i < 10 else "k"), label=n)[0]
             for i, n in enumerate(names)}
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.legend(fontsize=5, ncol=2, loc="upper right", frameon=False)
    title = ax.set_title("", fontsize=8)
    steps = np.unique(np.geomspace(1, last_step, frames).astype(int))

    def draw(k):
        for n, line in lines.items():
            p = res[n]["path"][: k + 1]
            line.set_data(p[:, 0], p[:, 1])
        title.set_text(f"f = (x² + 25 y²) / 2, step {k}")
        return list(lines.values()) + [title]

    anim = FuncAnimation(fig, draw, frames=steps, blit=False)
    anim.save(path, writer=PillowWriter(fps=8), dpi=90)
    plt.close(fig)


def _plot(results: dict, sched: dict, steps: int, out) -> None:
    plt = pyplot()
    names = list(next(iter(results.values())))
    # the SGD family solid, the adaptive methods dashed; colours from tab10, the eleventh black
    colors = {n: (plt.get_cmap("tab10")(i) if i < 10 else "k") for i, n in enumerate(names)}
    style = {n: ("-" if n in ("SGD", "momentum", "Nesterov") else "--") for n in names}
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 2.2, 4.0), squeeze=False)
    for ax, (sname, res) in zip(axes[0], results.items()):
        s = SURFACES[sname]
        x0, x1, y0, y1 = s.extent
        gx, gy = np.meshgrid(np.linspace(x0, x1, 150), np.linspace(y0, y1, 150))
        fz = s.f((gx, gy)) - s.minimum
        ax.contour(gx, gy, np.log10(fz + 1e-3), levels=18, colors="0.75", linewidths=0.6)
        for oname, r in res.items():
            p = r["path"]
            ax.plot(p[:, 0], p[:, 1], style[oname], lw=1.1, color=colors[oname], label=oname)
        ax.plot(*s.start, "ko", ms=4)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(s.title, fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (4.2 * n + 2.2), 1))
    fig.savefig(out / "optimizers_paths.png", dpi=64)
    plt.close(fig)

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 2.2, 3.6), squeeze=False)
    for ax, (sname, res) in zip(axes[0], results.items()):
        for oname, r in res.items():
            gap = np.maximum(np.asarray(r["loss"]) - SURFACES[sname].minimum, 1e-12)
            ax.semilogy(gap, style[oname], color=colors[oname], lw=1.1, label=f"{oname} ({r['learning_rate']:g})")
        ax.set_title(f"{SURFACES[sname].title}: f − f*", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(1e-12, None)
        ax.legend(fontsize=6, ncol=2, frameon=False, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "optimizers_loss.png", dpi=64)
    plt.close(fig)

    k = len(sched)
    cols = 5
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.9 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, (label, lrs) in zip(axes.flat, sched.items()):
        ax.plot(np.arange(len(lrs)), lrs, color="C0")
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.supxlabel("step", fontsize=8)
    fig.supylabel("learning rate", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "optimizers_schedules.png", dpi=72)
    plt.close(fig)
