"""``normlab train --config FILE``: train a model described in a TOML file.

The file has these sections (only ``[data]`` and ``[[layers]]`` are required)::

    [data]
    dataset = "digits"          # digits, mnist, fashion-mnist, mnist1d,
                                # moons, circles, linearly_separable
    # path = "~/data/mnist"     # folder of the IDX files (mnist, fashion-mnist)
    # flatten = true            # images as rows of 784 values (default true)

    [[layers]]                  # one table per layer, in order
    type = "Dense"              # a class of normlab.layers
    units = 100                 # the other keys are its constructor arguments
    use_bias = false
    [[layers]]
    type = "BatchNormalization"
    [[layers]]
    type = "Activation"
    activation = "relu"
    [[layers]]
    type = "Dense"
    units = 10
    activation = "softmax"

    [optimizer]                 # default: adam with its defaults
    name = "adam"               # a normlab.optimizers name
    learning_rate = 1e-3        # the other keys are its constructor arguments

    [training]
    epochs = 20                 # default 10
    batch_size = 32             # default 32
    validation_split = 0.1      # default 0
    seed = 0                    # default 0
    shuffle = true              # default true
    loss = "sparse_categorical_crossentropy"   # the default
    metrics = ["accuracy"]      # the default
    # distribute = "DataParallel"  # data-parallel over MPI ranks: mpiexec -n 4 normlab train --config ...

    [[callbacks]]               # any number, in order
    type = "EarlyStopping"      # a class of normlab.callbacks
    monitor = "val_loss"
    patience = 3

    [output]                    # relative paths: next to this file, or in --output DIR
    model = "model.npz"         # default "model.npz"
    # history = "history.json"  # the per-epoch logs, as JSON

Unknown sections, keys, layer types and callback types, a value of the
wrong type or out of range, and a batch_size larger than the training set
are errors (exit status 2) on one line naming the file, the place and what
was expected. Relative file paths of callbacks (ModelCheckpoint's filepath,
CSVLogger's filename) are taken like those of [output]. Every output is
checked before the data are read: one that cannot be written is an error
(exit status 1) before any training, and nothing is written.

The model is trained with a progress bar on a terminal (one line per epoch
elsewhere), saved with ``model.save`` (read it back with
:func:`normlab.load_model`), and its loss and metrics on the data set's test
split are printed.

Ctrl-C and --resume: while training, the model as of the last finished
epoch (weights, optimizer state, generators) is kept next to the model
file, in ``<model>.resume.npz`` with ``<model>.resume.json`` (the epoch to
go on from and the history so far), written at every epoch's end. Ctrl-C
leaves them there (exit status 130, one line saying how to resume), and
``normlab train --config FILE --resume`` goes on from that epoch: the
result is the same, bit for bit, as a run that was not interrupted (the
epochs' shuffles come from their own seed streams). The steps of the
epoch that was interrupted are done again. Callbacks start afresh (an
EarlyStopping's patience, for one). A finished run deletes the two files;
a run started without --resume next to them is refused, rather than
overwrite them.

Several processes: with ``[training] distribute = "DataParallel"``,
``mpiexec -n N normlab train --config FILE`` trains on N ranks
(:class:`normlab.distributed.DataParallel`: ``batch_size`` is the global
batch, split over the ranks; needs mpi4py and an MPI, ``pip install
"normlab[distributed]" mpich``). Rank 0 prints and writes every file; a
checkpoint resumes on any number of ranks (``distribute`` may change
between the run and its --resume).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ._common import (
    CommandError,
    Interrupted,
    UsageError,
    add_command,
    check_writable,
    one_line,
    positive_int,
    say,
    warm_up,
)
from ._config import ConfigError, load_config, load_data, validate_config
from ._resume import _Checkpoint, _fingerprint, _interrupts_deferred, _read_checkpoint, checkpoint_paths

__all__ = ["ConfigError", "load_config", "validate_config", "train_from_config", "checkpoint_paths", "add_parser"]



#: keyword arguments of callbacks that name a file or folder: relative ones are placed like [output]'s
_CALLBACK_PATHS = ("filepath", "filename")


def _own(cls, error: Exception) -> str:
    """``error``'s message without a leading ``"<cls name>: "`` (the caller names the class already)."""
    text = str(error)
    prefix = f"{cls.__name__}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _strategy(cfg: dict):
    """The [training] distribute strategy (None: one process)."""
    if cfg["training"].get("distribute") is None:
        return None
    try:
        from ..distributed import DataParallel

        return DataParallel()
    except ImportError as e:
        raise ConfigError(f"{cfg['source']}: [training] distribute = {cfg['training']['distribute']!r}: {e}") from None


def _build(cfg: dict, base: Path | None = None, distribute=None):
    from .. import Sequential

    where = cfg["source"]
    layers = []
    for i, (cls, kwargs) in enumerate(cfg["layers"]):
        try:
            layers.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: [[layers]] #{i + 1} ({cls.__name__}): {_own(cls, e)}") from None
    callbacks = []
    for i, (cls, kwargs) in enumerate(cfg["callbacks"]):
        kwargs = dict(kwargs)
        for key in _CALLBACK_PATHS:
            if base is not None and isinstance(kwargs.get(key), str):
                kwargs[key] = os.fspath(_place(base, kwargs[key]))
        try:
            callbacks.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: [[callbacks]] #{i + 1} ({cls.__name__}): {_own(cls, e)}") from None
    from .. import optimizers

    opt_cfg = dict(cfg["optimizer"])
    name = opt_cfg.pop("name")
    try:
        optimizer = optimizers.get({"class_name": name, "config": opt_cfg})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: [optimizer] {e}") from None
    model = Sequential(layers, name=Path(where).stem if where != "config" else None)
    tr = cfg["training"]
    try:
        model.compile(optimizer=optimizer, loss=tr["loss"], metrics=tr["metrics"], distribute=distribute)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: [training] {e}") from None
    return model, callbacks


def _base(cfg: dict, output_dir=None) -> Path:
    if output_dir is not None:
        return Path(output_dir).expanduser()
    return Path(cfg.get("config_dir") or "")


def _place(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p


def output_paths(cfg: dict, output_dir=None) -> tuple[Path, Path | None]:
    """Where the model and the history (None: not written) of ``cfg`` go.

    Relative paths of ``[output]`` are taken from ``output_dir`` if given,
    else from the config file's folder (the current folder for a config
    given as a dict); absolute ones are kept.
    """
    base = _base(cfg, output_dir)
    history = cfg["output"].get("history")
    return _place(base, cfg["output"]["model"]), (_place(base, history) if history else None)



def _train_samples(n: int, validation_split: float) -> int:
    # fit holds out int(n * validation_split) samples from the end
    return n - int(n * validation_split)



def _check_logs_keys(cfg: dict, model, callbacks, validation: bool) -> None:
    """Every callback's monitor and checkpoint template key must be a key of the epoch logs."""
    from ..callbacks import ModelCheckpoint

    names = ["loss"] + [m.name for m in model.metrics]
    keys = set(names) | {"learning_rate", "global_norm"}
    if validation:
        keys |= {f"val_{n}" for n in names}
    for i, cb in enumerate(callbacks):
        wanted = []
        monitor = getattr(cb, "monitor", None)
        # ModelCheckpoint reads its monitor only with save_best_only
        if isinstance(monitor, str) and getattr(cb, "save_best_only", True):
            wanted.append(("monitor", monitor))
        if isinstance(cb, ModelCheckpoint):
            wanted += [("filepath", k) for k in cb.filepath_keys if k != "epoch"]
        for arg, key in wanted:
            if key in keys:
                continue
            hint = (" (validation quantities need [training] validation_split > 0)"
                    if key.startswith("val_") and not validation else "")
            used = f"'monitor' is {key!r}" if arg == "monitor" else f"'filepath' uses {{{key}}}"
            raise ConfigError(
                f"{cfg['source']}: [[callbacks]] #{i + 1} ({type(cb).__name__}): {used}, which the epoch logs "
                f"will not have{hint}; they have: {', '.join(sorted(keys))}."
            )


def _check_outputs(cfg: dict, paths: list[tuple[Path, str]], callbacks) -> None:
    from ..callbacks import CSVLogger, ModelCheckpoint

    source = cfg["source"]
    config = Path(source)
    for path, what in paths:
        if config.is_file() and path.exists() and os.path.samefile(path, config):
            raise ConfigError(f"{source}: the {what} would overwrite the config file itself.")
        check_writable(path, what)
    for i, cb in enumerate(callbacks):
        what = f"file of [[callbacks]] #{i + 1} ({type(cb).__name__})"
        if isinstance(cb, ModelCheckpoint):
            if cb.filepath_keys:
                check_writable(cb.fixed_folder() or ".", f"folder of [[callbacks]] #{i + 1} (ModelCheckpoint)",
                               folder=True)
            else:
                check_writable(cb.filepath, what)
        elif isinstance(cb, CSVLogger):
            check_writable(cb.filename, what)


def train_from_config(
    cfg, *, verbose="auto", output_dir=None, epochs: int | None = None, print_fn=say, resume: bool = False,
) -> dict:
    """Train, save and evaluate the model a config (a path or a validated dict) describes.

    Parameters
    ----------
    cfg : str, Path or dict
        A TOML file, or its parsed (validated or not) contents.
    verbose : "auto", 0, 1 or 2
        As ``fit``'s; 0 also leaves out the model summary.
    output_dir : str or Path, optional
        Folder for the outputs whose ``[output]`` paths are relative; default
        the config file's folder.
    epochs : int, optional
        Overrides ``[training] epochs``.
    print_fn : callable, default print (flushed at once)
    resume : bool, default False
        Go on from the checkpoint an interrupted run left (see the module's
        documentation).

    Returns
    -------
    dict
        ``{"model", "history", "test", "model_path", "history_path"}``;
        ``history`` is ``{"epoch": [...], "history": {key: [...]}}``, the
        epochs of an interrupted run included.

    Raises
    ------
    ConfigError
        An invalid config, or a ``batch_size`` larger than the training set.
    normlab.cli._common.CommandError
        Data that cannot be read, an output that cannot be written (before
        any training), a checkpoint that cannot be resumed.
    normlab.cli._common.Interrupted
        Ctrl-C (the message says what was kept and how to resume).
    """
    if not isinstance(cfg, dict):
        cfg = load_config(cfg)
    elif "source" not in cfg:  # a parsed, not yet validated config
        cfg = validate_config(cfg)
    where = cfg["source"]
    tr = dict(cfg["training"])
    if epochs is not None:
        tr["epochs"] = epochs
    base = _base(cfg, output_dir)
    model_path, history_path = output_paths(cfg, output_dir)
    ckpt_npz, ckpt_meta = checkpoint_paths(model_path)
    fingerprint = _fingerprint(cfg)
    dist = _strategy(cfg)
    chief = dist is None or dist.is_chief  # in a data-parallel run rank 0 prints and writes
    if not chief:
        print_fn = _silent
    there = ckpt_npz.exists() or ckpt_meta.exists()
    if dist is not None:  # every rank looks before rank 0 writes the first checkpoint
        there = dist.any(there)
    if not resume and there:
        raise UsageError(
            f"{ckpt_npz}: a checkpoint of an unfinished run (interrupted or failed) is there; go on with it with "
            f"--resume, or delete {ckpt_npz.name} and {ckpt_meta.name} to start over."
        )
    model, callbacks = _build(cfg, base, dist)  # configuration errors first, then the (slower) data
    outputs = [(model_path, "model file ([output] model)"), (ckpt_npz, "checkpoint"), (ckpt_meta, "checkpoint")]
    if history_path is not None:
        outputs.append((history_path, "history file ([output] history)"))
    _check_outputs(cfg, outputs, callbacks)
    try:
        (x_train, y_train), (x_test, y_test) = load_data(cfg["data"])
    except (OSError, ValueError) as e:
        raise CommandError(f"{where}: [data] {cfg['data']['dataset']}: {one_line(e)}") from None
    n_fit = _train_samples(len(x_train), tr["validation_split"])
    if tr["batch_size"] > n_fit:
        # fit would quietly take the whole set as one batch; a typo should not train silently
        held = f" after the validation split of {tr['validation_split']:g}" if tr["validation_split"] else ""
        raise ConfigError(
            f"{where}: [training] batch_size {tr['batch_size']} is more than the {n_fit} training "
            f"samples of {cfg['data']['dataset']}{held}; use at most {n_fit} (that many trains on all of "
            "them at every step)."
        )
    if tr["validation_split"] and int(len(x_train) * tr["validation_split"]) == 0:
        raise ConfigError(f"{where}: [training] validation_split {tr['validation_split']:g} of the "
                          f"{len(x_train)} training samples holds out none; use at least {1 / len(x_train):.2g}.")
    initial_epoch, stopped, past = 0, False, {"epoch": [], "history": {}}
    if resume:
        model, initial_epoch, stopped, past = _read_checkpoint(ckpt_npz, ckpt_meta, fingerprint, where)
        if dist is not None:  # the same optimizer (its state kept), now on the ranks
            model.compile(model.optimizer, model.loss, metrics=tr["metrics"], distribute=dist)
    else:
        try:
            model.build((None,) + tuple(x_train.shape[1:]), seed=tr["seed"])
        except (TypeError, ValueError, MemoryError) as e:  # numpy's "Unable to allocate 466. TiB ..."
            raise ConfigError(f"{where}: [[layers]] do not fit the {cfg['data']['dataset']} inputs of shape "
                              f"{tuple(x_train.shape[1:])}: {e}") from None
    _check_logs_keys(cfg, model, callbacks, validation=bool(tr["validation_split"]))
    todo = 0 if stopped else max(0, tr["epochs"] - initial_epoch)
    eval_batch = max(tr["batch_size"], 256)

    def warm():
        # the same network for two steps, with the validation and the test passes: every kernel
        # that training calls, compiled (first run) or loaded from the cache before the first epoch
        spare, _ = _build(cfg)
        k = min(len(x_train), 2 * tr["batch_size"])
        val = (x_train[:k], y_train[:k]) if tr["validation_split"] else None
        spare.fit(x_train[:k], y_train[:k], batch_size=tr["batch_size"], epochs=1, verbose=0,
                  validation_data=val, shuffle=tr["shuffle"], seed=tr["seed"])
        spare.evaluate(x_test[:eval_batch], y_test[:eval_batch], batch_size=eval_batch)

    try:
        # also without numba (milliseconds): what fit refuses (a loss or a last layer that does
        # not fit the labels) is found here, before anything is printed or written
        warm_up(warm, "normlab train", always=True)
    except (ValueError, MemoryError) as e:
        raise ConfigError(f"{where}: [[layers]] and [training] do not fit the {cfg['data']['dataset']} data: "
                          f"{one_line(e)}") from None
    print_fn(
        f"normlab train: {cfg['data']['dataset']} ({len(x_train)} train / {len(x_test)} test), "
        f"{tr['epochs']} epochs of batches of {tr['batch_size']}, optimizer {cfg['optimizer']['name']}"
        + (f"; resuming at epoch {initial_epoch + 1} ({todo} to go)" if resume else "")
    )
    checkpoint = _Checkpoint(ckpt_npz, ckpt_meta, fingerprint=fingerprint, initial_epoch=initial_epoch,
                             history=past["history"], epochs=past["epoch"], writes=chief)
    try:
        if verbose:
            model.summary(print_fn=print_fn)
        if todo:
            try:
                model.fit(
                    x_train, y_train,
                    batch_size=tr["batch_size"], epochs=tr["epochs"], validation_split=tr["validation_split"],
                    shuffle=tr["shuffle"], seed=tr["seed"], callbacks=[*callbacks, checkpoint], verbose=verbose,
                    initial_epoch=initial_epoch,
                )
            except (ValueError, MemoryError) as e:
                if checkpoint.saved is None:
                    # fit refused before its first step: the loss or the last layer does not fit the labels
                    raise ConfigError(f"{where}: [[layers]] and [training] do not fit the {cfg['data']['dataset']} "
                                      f"data: {one_line(e)}") from None
                # a callback's complaint found while training (or weights a checkpoint refuses): it is kept
                raise CommandError(f"{where}: training stopped: {one_line(e)} The checkpoint {ckpt_npz.name} (epoch "
                                   f"{checkpoint.saved}) is kept; delete it and {ckpt_meta.name} to start over."
                                   ) from None
        test = model.evaluate(x_test, y_test, batch_size=eval_batch, return_dict=True)
        print_fn("test: " + " - ".join(f"{k}: {v:.4f}" for k, v in test.items()))
        history = {"epoch": checkpoint.epochs, "history": checkpoint.history}
        with _interrupts_deferred() if chief else contextlib.nullcontext():
            if not chief:  # the ranks' models are the same: rank 0 writes
                return {"model": model, "history": history, "test": test, "model_path": model_path,
                        "history_path": history_path}
            model_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                model.save(model_path)
            except ValueError as e:  # weights that are not finite (a diverged run) are not saved
                raise CommandError(
                    f"{model_path}: the model was not saved: {one_line(e)} The checkpoint {ckpt_npz.name} (epoch "
                    f"{checkpoint.saved}) is kept; delete it and {ckpt_meta.name} to start over."
                ) from None
            print_fn(f"saved the model to {os.fspath(model_path)} (normlab.load_model reads it)")
            if history_path is not None:
                history_path.parent.mkdir(parents=True, exist_ok=True)
                history_path.write_text(json.dumps({**history, "test": test}, indent=1) + "\n")
                print_fn(f"saved the history to {os.fspath(history_path)}")
            checkpoint.remove()
    except KeyboardInterrupt:
        if checkpoint.saved is None:
            raise Interrupted("interrupted before training started; nothing was written.") from None
        again = f"normlab train --config {where}" + (f" --output {output_dir}" if output_dir is not None else "")
        when = f"as of epoch {checkpoint.saved} of {tr['epochs']}" if checkpoint.saved else "before its first epoch"
        raise Interrupted(f"interrupted; the model {when} is in {ckpt_npz}: go on with {again} --resume") from None
    return {"model": model, "history": history, "test": test, "model_path": model_path,
            "history_path": history_path}


def _silent(*args, **kwargs) -> None:
    """The print_fn of the ranks of a data-parallel run but rank 0."""


def add_parser(sub) -> None:
    p = add_command(sub, "train", help="train a model described in a TOML config file", description=__doc__)
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML file (see above)")
    p.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help="folder for the model and the history when their [output] paths are relative "
        "(default: the config file's folder)",
    )
    p.add_argument("--epochs", type=positive_int, default=None, help="override [training] epochs")
    p.add_argument("--resume", action="store_true",
                   help="go on from the checkpoint that an interrupted run (Ctrl-C) left next to the model file")
    p.add_argument("--quiet", action="store_true", help="no progress, model summary or epoch lines")
    p.set_defaults(func=_main)


def _main(args) -> int:
    if args.output is not None and Path(args.output).suffix == ".npz" and not Path(args.output).is_dir():
        # --output used to name the model file; a folder called "model.npz" is surely that old use
        args.command_parser.error(
            f"argument --output: a folder now (the model and the history go in it), got {args.output!r}; "
            "name the model file with [output] model in the config"
        )
    try:
        train_from_config(args.config, verbose=0 if args.quiet else "auto", output_dir=args.output,
                          epochs=args.epochs, resume=args.resume)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        # once training has started, train_from_config says what it kept instead
        raise Interrupted("interrupted before training started; nothing was written.") from None
    return 0
