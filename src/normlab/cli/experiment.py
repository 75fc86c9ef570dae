"""normlab experiment: the reproducible experiments of normlab.experiments.

Each writes PNG plots, a JSON file of its numbers and (bn-paper, mnist1d) a
Markdown report into --out (default normlab-results/). Before the long run,
a run of two steps into a temporary folder checks the data and the options
(and, on the first run, compiles the numba kernels).

Plots need matplotlib (pip install "normlab[plot]"; or pass --no-plots); the
built-in data sets need scikit-learn (pip install "normlab[datasets]").
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from ..callbacks.progbar import interactive
from ._common import (
    CommandError,
    add_command,
    check_writable,
    nonnegative_int,
    one_line,
    positive_float,
    positive_int,
    say,
    warm_up,
)

DEFAULT_OUT = "normlab-results"


def _common(p, steps_default: int, steps_help: str) -> None:
    p.add_argument("--steps", type=positive_int, default=steps_default, help=f"{steps_help} (default {steps_default})")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed, an integer >= 0 (default 0)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT}/)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument(
        "--threads",
        type=nonnegative_int,
        default=1,
        help="BLAS threads (default 1: these networks' matrices are small and extra threads only add "
        "overhead; 0 leaves the BLAS default)",
    )


def _unit(text: str) -> int:
    v = nonnegative_int(text)
    if v >= 100:  # the hidden layers have 100 units
        raise argparse.ArgumentTypeError(f"must be < 100 (the units of a hidden layer), got {v}")
    return v


def _for_cli(doc: str, module: str) -> str:
    """An experiment's docstring, its parameter names turned into the options that set them."""
    import re

    doc = re.sub(r"\bout_dir\b", "--out", doc)
    doc = re.sub(r"\beval_every\b", "--eval-every", doc)
    # module-level names, spelled in full so that they can be looked up
    return re.sub(r":(?:data|func):`([A-Za-z_]+)`", rf"{module}.\1", doc)


def add_parser(sub) -> None:
    from ..experiments import bn_paper, mnist1d, moving_stats, normprop, optimizers, regularization

    p = add_command(
        sub, "experiment",
        help="run a reproducible experiment (bn-paper, regularization, mnist1d, normprop, optimizers, moving-stats)",
        description=__doc__,
    )
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    p.set_defaults(func=lambda args: _no_experiment(p))

    b = add_command(
        esub,
        "bn-paper",
        help="Ioffe and Szegedy 2015, section 4.1 and Figure 1 (3 x 100 sigmoid units, with and without BN)",
        description=_for_cli(bn_paper.__doc__, "normlab.experiments.bn_paper"),
    )
    b.add_argument(
        "--dataset",
        choices=bn_paper.DATASETS,
        default=None,
        help="data set (default fashion-mnist if its files are found, else digits)",
    )
    _common(b, 50_000, "training steps per network")
    b.add_argument("--eval-every", type=positive_int, default=None, metavar="N",
                   help="steps between test evaluations (default min(1000, steps / 10))")
    b.add_argument("--lr", type=positive_float, default=bn_paper.LEARNING_RATE,
                   help=f"SGD learning rate (default {bn_paper.LEARNING_RATE}; see the report for why)")
    b.add_argument("--batch-size", type=positive_int, default=60,
                   help="mini-batch size (default 60, as in the paper); more than the training set is an error")
    b.add_argument("--unit", type=_unit, default=None,
                   help="which sigmoid of the last hidden layer to follow, 0 to 99 (default: drawn from the seed)")
    b.add_argument("--data-path", default=None, metavar="DIR", help="folder with the MNIST / Fashion-MNIST IDX files")
    b.set_defaults(func=_bn_paper)

    r = add_command(
        esub,
        "regularization",
        help="scikit-learn's plot_mlp_alpha: L2 strength vs decision surfaces on three toy sets",
        description=_for_cli(regularization.__doc__, "normlab.experiments.regularization"),
    )
    _common(r, 3000, "full-batch Adam steps per network")
    r.add_argument("--lr", type=positive_float, default=0.01, help="Adam learning rate (default 0.01)")
    r.set_defaults(func=_regularization)

    m = add_command(
        esub,
        "mnist1d",
        help="MNIST-1D: logistic regression, MLP and CNN, with and without BN and dropout, vs the published figures",
        description=_for_cli(mnist1d.__doc__, "normlab.experiments.mnist1d"),
    )
    _common(m, 6000, "Adam steps per network")
    m.add_argument("--lr", type=positive_float, default=1e-2, help="Adam learning rate (default 0.01)")
    m.add_argument("--batch-size", type=positive_int, default=100,
                   help="mini-batch size (default 100); more than the training set is an error")
    m.add_argument("--models", nargs="+", choices=mnist1d.MODELS, default=list(mnist1d.MODELS),
                   help="which networks to train (default: all three)")
    m.add_argument("--seeds", type=positive_int, default=3, metavar="N",
                   help="train each network with N seeds (--seed, --seed + 1, ...) and report mean and std (default 3)")
    m.set_defaults(func=_mnist1d)

    n = add_command(
        esub,
        "normprop",
        help="normalization propagation beside BN, weight normalization and SELU on digits (accuracy, cost per step)",
        description=_for_cli(normprop.__doc__, "normlab.experiments.normprop"),
    )
    _common(n, 3000, "SGD steps per network")
    n.add_argument("--eval-every", type=positive_int, default=25, metavar="N",
                   help="steps between test evaluations, and the length of a timing round (default 25)")
    n.add_argument("--lr", type=positive_float, default=0.01, help="SGD learning rate, momentum 0.9 (default 0.01)")
    n.add_argument("--batch-size", type=positive_int, default=32, help="mini-batch size (default 32)")
    n.add_argument("--models", nargs="+", choices=normprop.MODELS, default=list(normprop.MODELS),
                   help="which networks to train (default: all five)")
    n.set_defaults(func=_normprop)

    o = add_command(
        esub,
        "optimizers",
        help="every optimizer on an ill-conditioned quadratic, Rosenbrock and a saddle; learning-rate schedules",
        description=_for_cli(optimizers.__doc__, "normlab.experiments.optimizers"),
    )
    _common(o, 500, "steps per optimizer and learning rate")
    o.add_argument("--optimizers", nargs="+", choices=optimizers.OPTIMIZERS, default=list(optimizers.OPTIMIZERS),
                   help="which optimizers to run (default: all)")
    o.add_argument("--gif", action="store_true",
                   help="also write optimizers_quadratic.gif, the paths drawn step by step (needs Pillow)")
    o.set_defaults(func=_optimizers)

    s = add_command(
        esub,
        "moving-stats",
        help="batch norm's moving averages vs recomputed statistics after short runs, for several momenta",
        description=_for_cli(moving_stats.__doc__, "normlab.experiments.moving_stats"),
    )
    _common(s, 2400, "the longest run, in steps (checkpoints at 1, 3, 10, 30 and 100 %% of it)")
    s.add_argument("--momenta", nargs="+", type=float, default=list(moving_stats.MOMENTA), metavar="M",
                   help="BN momenta to compare (default: 0.9 0.95 0.99 0.999)")
    s.set_defaults(func=_moving_stats)


def _no_experiment(parser) -> int:
    parser.print_help()
    return 2


def _threads(args):
    from .demo import blas_threads

    return blas_threads(args.threads)


def _quiet(*args, **kwargs) -> None:
    pass


def _check_before_running(args) -> None:
    # the output folder and the plotting library: before the long run, not at its end
    check_writable(args.out, "output folder (--out)", folder=True)
    if not args.no_plots:
        from ..experiments._common import pyplot

        try:
            pyplot()
        except ImportError as e:
            raise CommandError(f"{e} (or run without the plots: --no-plots)") from None


def _preflight(args, run, name: str, **kwargs) -> dict:
    """Run the experiment for a step or two into a temporary folder, its output discarded.

    Missing data and bad options show up in seconds rather than after the
    long run, and the numba kernels are compiled (first run, with one line
    saying so) or loaded from the cache before any timing starts.
    """
    box = {}
    with tempfile.TemporaryDirectory(prefix="normlab-preflight-") as tmp:

        def work():
            box["result"] = run(out_dir=tmp, plots=False, print_fn=_quiet, **kwargs)

        try:
            warm_up(work, f"normlab experiment {name}", always=True)
        except ValueError as e:
            # data files that are not what they should be (an HTML page saved as an IDX file, ...)
            raise CommandError(one_line(e)) from None
    return box["result"]


def _check_batch_size(args, result: dict) -> None:
    n = int(result["config"]["n_train"])
    if args.batch_size > n:
        args.command_parser.error(
            f"argument --batch-size: {args.batch_size} is more than the {n} training samples of this data set; "
            f"use at most {n}"
        )


def _bn_paper(args) -> int:
    from ..experiments import bn_paper

    _check_before_running(args)
    try:
        with _threads(args):
            common = dict(dataset=args.dataset, batch_size=args.batch_size, learning_rate=args.lr, unit=args.unit,
                          data_path=args.data_path, seed=args.seed)
            _check_batch_size(args, _preflight(args, bn_paper.run, "bn-paper", steps=2, eval_every=1, **common))
            bn_paper.run(steps=args.steps, eval_every=args.eval_every, out_dir=args.out,
                         plots=not args.no_plots, progress=interactive(sys.stderr), print_fn=say, **common)
    except FileNotFoundError as e:
        hint = "" if args.dataset == "digits" else (
            " Pass the folder of the IDX files with --data-path DIR, or run on the built-in data instead: "
            "normlab experiment bn-paper --dataset digits"
        )
        raise CommandError(f"{e}{hint}") from None
    return 0


def _regularization(args) -> int:
    from ..experiments import regularization

    _check_before_running(args)
    with _threads(args):
        _preflight(args, regularization.run, "regularization", steps=1, learning_rate=args.lr, seed=args.seed,
                   compare_sklearn=False)
        regularization.run(
            steps=args.steps, learning_rate=args.lr, out_dir=args.out, seed=args.seed, plots=not args.no_plots,
            print_fn=say,
        )
    return 0


def _mnist1d(args) -> int:
    from ..experiments import mnist1d

    _check_before_running(args)
    with _threads(args):
        common = dict(learning_rate=args.lr, batch_size=args.batch_size, models=tuple(args.models), seed=args.seed)
        _check_batch_size(args, _preflight(args, mnist1d.run, "mnist1d", steps=2, eval_every=1, n_seeds=1, **common))
        mnist1d.run(steps=args.steps, n_seeds=args.seeds, out_dir=args.out, plots=not args.no_plots, print_fn=say,
                    **common)
    return 0


def _normprop(args) -> int:
    from ..experiments import normprop

    _check_before_running(args)
    with _threads(args):
        common = dict(batch_size=args.batch_size, learning_rate=args.lr, models=tuple(args.models), seed=args.seed)
        _preflight(args, normprop.run, "normprop", steps=2, eval_every=1, **common)
        normprop.run(steps=args.steps, eval_every=args.eval_every, out_dir=args.out, plots=not args.no_plots,
                     print_fn=say, **common)
    return 0


def _optimizers(args) -> int:
    from ..experiments import optimizers

    _check_before_running(args)
    with _threads(args):
        optimizers.run(steps=args.steps, optimizers=tuple(args.optimizers), out_dir=args.out,
                       plots=not args.no_plots, gif=args.gif and not args.no_plots, seed=args.seed, print_fn=say)
    return 0


def _checkpoints(steps: int) -> tuple:
    return tuple(sorted({max(1, round(steps * f)) for f in (0.01, 0.03, 0.1, 0.3, 1.0)}))


def _moving_stats(args) -> int:
    from ..experiments import moving_stats

    bad = [m for m in args.momenta if not 0 <= m <= 1]
    if bad:
        args.command_parser.error(f"argument --momenta: {bad[0]} is not in [0, 1]")
    _check_before_running(args)
    with _threads(args):
        moving_stats.run(_checkpoints(args.steps), momenta=tuple(args.momenta), out_dir=args.out,
                         plots=not args.no_plots, seed=args.seed, print_fn=say)
    return 0
