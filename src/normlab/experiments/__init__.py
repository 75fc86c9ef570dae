"""Reproducible experiments behind ``normlab experiment ...``.

Each module exposes ``run(..., out_dir, steps, seed, print_fn) -> dict``,
which trains, writes its files (PNG plots, JSON, Markdown) into ``out_dir``
and returns the numbers it wrote:

- :mod:`~normlab.experiments.bn_paper`: Ioffe and Szegedy (2015), section 4.1
  and Figure 1: test accuracy and the 15/50/85th percentiles of one sigmoid's
  input over training, with and without batch normalization;
- :mod:`~normlab.experiments.regularization`: scikit-learn's
  ``plot_mlp_alpha`` study of the L2 strength on three 2-D toy sets;
- :mod:`~normlab.experiments.mnist1d`: logistic regression, an MLP and a CNN,
  each with and without batch normalization and dropout, on MNIST-1D, beside
  the published figures;
- :mod:`~normlab.experiments.normprop`: normalization propagation beside
  batch norm, weight normalization and SELU on digits (accuracy over steps,
  cost per step against batch norm);
- :mod:`~normlab.experiments.optimizers`: every optimizer on an
  ill-conditioned quadratic, Rosenbrock and a saddle (paths over contours,
  loss over steps) and the learning-rate schedules side by side;
- :mod:`~normlab.experiments.moving_stats`: batch norm's moving averages
  against recomputed population statistics after short runs, per momentum.

Plots need matplotlib (``pip install "normlab[plot]"``); it is imported only
when a plot is drawn, with the Agg backend.
"""

from . import bn_paper, mnist1d, moving_stats, normprop, optimizers, regularization

__all__ = ["bn_paper", "regularization", "mnist1d", "normprop", "optimizers", "moving_stats"]
