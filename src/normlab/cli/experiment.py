"""normlab experiment: the reproducible experiments of normlab.experiments.

Each writes PNG plots, a JSON file of its numbers and (bn-paper, mnist1d) a
Markdown report into --out (default normlab-results/).
"""

from __future__ import annotations

import argparse

DEFAULT_OUT = "normlab-results"


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _common(p, steps_default: int, steps_help: str) -> None:
    p.add_argument("--steps", type=_positive_int, default=steps_default, help=f"{steps_help} (default {steps_default})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT}/)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads (default 1: these networks' matrices are small and extra threads only add "
        "overhead; 0 leaves the BLAS default)",
    )


def add_parser(sub) -> None:
    from ..experiments import bn_paper, mnist1d, regularization

    p = sub.add_parser(
        "experiment",
        help="run a reproducible experiment (bn-paper, regularization, mnist1d)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    p.set_defaults(func=lambda args: _no_experiment(p))

    b = esub.add_parser(
        "bn-paper",
        help="Ioffe and Szegedy 2015, section 4.1 and Figure 1 (3 x 100 sigmoid units, with and without BN)",
        description=bn_paper.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--dataset",
        choices=bn_paper.DATASETS,
        default=None,
        help="data set (default fashion-mnist if its files are found, else digits)",
    )
    _common(b, 50_000, "training steps per network")
    b.add_argument("--eval-every", type=_positive_int, default=None, metavar="N",
                   help="steps between test evaluations (default min(1000, steps / 10))")
    b.add_argument("--lr", type=_positive_float, default=bn_paper.LEARNING_RATE,
                   help=f"SGD learning rate (default {bn_paper.LEARNING_RATE}; see the report for why)")
    b.add_argument("--batch-size", type=_positive_int, default=60, help="mini-batch size (default 60, as in the paper)")
    b.add_argument("--unit", type=int, default=None, help="which sigmoid of the last hidden layer to follow (default: drawn from the seed)")
    b.add_argument("--data-path", default=None, metavar="DIR", help="folder with the MNIST / Fashion-MNIST IDX files")
    b.set_defaults(func=_bn_paper)

    r = esub.add_parser(
        "regularization",
        help="scikit-learn's plot_mlp_alpha: L2 strength vs decision surfaces on three toy sets",
        description=regularization.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(r, 3000, "full-batch Adam steps per network")
    r.add_argument("--lr", type=_positive_float, default=0.01, help="Adam learning rate (default 0.01)")
    r.set_defaults(func=_regularization)

    m = esub.add_parser(
        "mnist1d",
        help="MNIST-1D: logistic regression, MLP and CNN, with and without BN and dropout, vs the published figures",
        description=mnist1d.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(m, 6000, "Adam steps per network")
    m.add_argument("--lr", type=_positive_float, default=1e-2, help="Adam learning rate (default 0.01)")
    m.add_argument("--batch-size", type=_positive_int, default=100, help="mini-batch size (default 100)")
    m.add_argument("--models", nargs="+", choices=mnist1d.MODELS, default=list(mnist1d.MODELS),
                   help="which networks to train (default: all three)")
    m.add_argument("--seeds", type=_positive_int, default=3, metavar="N",
                   help="train each network with N seeds (--seed, --seed + 1, ...) and report mean and std (default 3)")
    m.set_defaults(func=_mnist1d)


def _no_experiment(parser) -> int:
    parser.print_help()
    return 2


def _threads(args):
    from .demo import blas_threads

    if args.threads < 0:
        raise SystemExit(f"normlab experiment: --threads must be >= 0, got {args.threads}")
    return blas_threads(args.threads)


def _bn_paper(args) -> int:
    from ..experiments import bn_paper

    try:
        with _threads(args):
            bn_paper.run(
                dataset=args.dataset, steps=args.steps, eval_every=args.eval_every, batch_size=args.batch_size,
                learning_rate=args.lr, unit=args.unit, data_path=args.data_path, out_dir=args.out, seed=args.seed,
                plots=not args.no_plots, progress=True,
            )
    except FileNotFoundError as e:
        hint = "" if args.dataset == "digits" else (
            "\n\nPass the folder of the IDX files with --data-path DIR, or run on the built-in data instead: "
            "normlab experiment bn-paper --dataset digits"
        )
        raise SystemExit(f"normlab experiment bn-paper: {e}{hint}") from None
    except ImportError as e:
        raise SystemExit(f"normlab experiment bn-paper: {e}") from None
    return 0


def _regularization(args) -> int:
    from ..experiments import regularization

    try:
        with _threads(args):
            regularization.run(
                steps=args.steps, learning_rate=args.lr, out_dir=args.out, seed=args.seed, plots=not args.no_plots
            )
    except ImportError as e:
        raise SystemExit(f"normlab experiment regularization: {e}") from None
    return 0


def _mnist1d(args) -> int:
    from ..experiments import mnist1d

    try:
        with _threads(args):
            mnist1d.run(steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size, n_seeds=args.seeds,
                        models=tuple(args.models),
                        out_dir=args.out, seed=args.seed, plots=not args.no_plots)
    except ImportError as e:
        raise SystemExit(f"normlab experiment mnist1d: {e}") from None
    return 0
