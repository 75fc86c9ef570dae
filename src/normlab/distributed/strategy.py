"""Synchronous data parallelism over MPI ranks: :class:`DataParallel`.

One training step on ``N`` ranks, for a global batch of ``k`` samples:

1. each rank takes its rows of the batch (:mod:`normlab.distributed.sharding`);
2. forward, loss and backward on them, the output gradient scaled by the
   rank's share of the batch (``k_r / k``; 1 for a loss reduced by
   ``"sum"``), so that each rank's gradients are its part of the gradient
   of the global batch's loss; synchronized batch normalization layers
   exchange their statistics on the way (:mod:`normlab.distributed.sync_bn`);
3. one allreduce (a sum) of the flat gradient buffer; with synchronized
   batch normalization, in parts, each started during the backward pass
   once its layers' gradients are final (:class:`~normlab.distributed._comm.GradientBuckets`);
4. penalties, clipping and the optimizer's update, the same on every rank
   (they see the same gradients and parameters).

The ranks therefore keep identical parameters, optimizer state and moving
statistics, and train as one process would on the global batch, up to the
order of summation. Losses and metrics are summed over the ranks (each
weighted by its samples) before the callbacks see them.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import os
import traceback

import numpy as np

from ..errors import NonFiniteError
from ..models._checks import metric_weight
from ._comm import Communicator, GradientBuckets, load_mpi
from ._buckets import all_layers as _all_layers
from ._buckets import bucket_plan as _bucket_plan
from ._logs import LogsMixin
from .sharding import ShardedArraySource, SlicedSource, span

__all__ = ["DataParallel", "configure_model"]


class DataParallel(LogsMixin):
    """Synchronous data-parallel training on the ranks of an MPI job.

    ``model.compile(..., distribute=DataParallel())`` and launch the script
    with ``mpiexec -n N python train.py``: every rank runs the same script
    on the same data; ``fit`` gives each rank its rows of every global
    batch (``batch_size`` is the global batch), averages the gradients with
    one allreduce per step, and keeps the ranks' models identical. In one
    process (no ``mpiexec``) it changes nothing.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The ranks to train on; default ``MPI.COMM_WORLD``.
    timeout : float or None, default 600
        Seconds a rank may wait in one collective operation before it ends
        the job (``MPI_Abort``) with a message saying where it waited: a rank
        that stopped, or diverged, never leaves the others hanging. ``None``
        waits forever.

    Notes
    -----
    What is synchronized: rank 0's weights, moving statistics, optimizer
    state (slots and counters) and random layers' generators are broadcast
    when ``fit`` starts (after the callbacks' ``on_train_begin``, so a
    ``BackupAndRestore`` on rank 0 restores every rank); random layers'
    generators are broadcast again at each epoch's start, and rank ``r``
    draws from rank 0's generator jumped ``r`` times (``bit_generator.jumped``),
    so shards get independent noise and a run is a function of rank 0's
    state at every epoch boundary (a checkpoint resumes bit for bit on the
    same number of ranks).

    ``evaluate`` and ``predict`` on arrays split the samples over the ranks
    and gather the results in the original order (every rank gets them);
    on a PyDataset or a generator every rank evaluates all of it.
    ``train_on_batch`` and ``test_on_batch`` take the global batch and
    split it likewise. Only rank 0 prints progress and writes checkpoints,
    CSV logs, backups and history files.

    Failure: an exception on any rank inside ``fit``, ``evaluate``,
    ``predict`` or ``train_on_batch`` prints that rank's traceback and ends
    the whole job with ``MPI_Abort`` (exit status 1): the other ranks may
    be waiting in a collective for it. A step whose values are non-finite
    on one rank under ``on_nonfinite="skip"`` is skipped on every rank (its
    gradients enter the allreduce as NaN).
    """

    def __init__(self, comm=None, *, timeout: float | None = 600.0):
        if timeout is not None and (not isinstance(timeout, numbers.Real) or isinstance(timeout, bool)
                                    or not timeout > 0 or not math.isfinite(timeout)):
            from .._validation import InvalidParameterError

            raise InvalidParameterError(
                f"The 'timeout' parameter of DataParallel must be a float > 0 or None. Got {timeout!r} instead.")
        MPI = load_mpi()
        self._comm = Communicator(MPI.COMM_WORLD if comm is None else comm, None if timeout is None else float(timeout))
        self.timeout = timeout
        self._share = None  # this rank's share of the current global batch (set by the sharded data)
        self._depth = 0
        self._random_layers: list = []
        self._plain_buffers = None  # the moving statistics averaged after each step (see backprop)
        self._buckets = None  # (model, gradient buffer, GradientBuckets or None): see _gradient_buckets
        self._step_logs = self._step_stop = True  # fit's per-step collectives (see _watch_callbacks)

    @property
    def rank(self) -> int:
        return self._comm.rank

    @property
    def size(self) -> int:
        return self._comm.size

    @property
    def is_chief(self) -> bool:
        """True on rank 0, the rank that prints and writes files."""
        return self._comm.rank == 0

    @property
    def allreduce_seconds(self) -> float:
        """Seconds spent in the gradient allreduce so far (with ``allreduce_calls``, for benchmarks)."""
        return self._comm.allreduce_seconds

    @property
    def allreduce_calls(self) -> int:
        return self._comm.allreduce_calls

    def get_config(self) -> dict:
        return {"timeout": self.timeout}

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, size={self.size}, timeout={self.timeout!r})"

    # ----------------------------------------------------------- failures
    @contextlib.contextmanager
    def guard(self, where: str):
        """Run a model call; an exception escaping it ends the job with this rank's message."""
        if self._depth:  # a call inside another (fit's validation): the outer one guards
            yield
            return
        comm = self._comm
        self._depth, previous = 1, comm.where
        comm.where = where
        try:
            yield
        except BaseException as exc:
            comm.abort(
                f"normlab.distributed: rank {comm.rank} of {comm.size} failed in {where} with "
                f"{type(exc).__name__}: {exc}\nEnding the job (MPI_Abort). That rank's traceback:\n"
                f"{traceback.format_exc()}"
            )
            raise  # pragma: no cover - Abort does not return
        finally:
            self._depth, comm.where = 0, previous

    def check_finite(self, x: np.ndarray, owner: str) -> None:
        """Raise unless ``x`` is finite, each rank checking its contiguous part (``span``) of the samples.

        For the model's check of ``x`` (one pass over all of it on every rank
        otherwise: 0.17 ms of CPU per step for the MLP's 1024 rows): inside
        a call the strategy guards (``fit``, ``evaluate``, ``predict``,
        ``train_on_batch``, ``test_on_batch``) every rank goes on to a
        collective after the check, so the rank whose part holds the NaN or
        inf raises, and :meth:`guard` ends the job with its message while
        the others wait for it. Outside such a call (a method one rank may
        call alone) the rank checks all of ``x``.
        """
        from ..models._checks import _check_finite

        if self._depth and self.size > 1 and len(x) >= self.size:
            a, b = span(len(x), self.rank, self.size)
            x = x[a:b]
        _check_finite(x, owner, "x")

    # ---------------------------------------------------------- the step
    def fuse_ok(self, model) -> bool:
        """True: the executor fuses a synchronized batch norm with its activation into a pair of its own
        (:class:`normlab.distributed._sync_fused.SyncBatchNormActivation`)."""
        return True

    def _loss_share(self, model, share: float) -> float:
        return 1.0 if model.loss.reduction == "sum" else share

    def _check_loss(self, model, owner: str) -> None:
        loss = model.loss
        if loss.reduction == "mean_with_sample_weight" or getattr(loss, "ignore_class", None) is not None:
            raise ValueError(
                f"{owner}: DataParallel needs a loss whose value on a batch is the sum of its shards' values "
                f"weighted by their samples (reduction 'sum_over_batch_size' or 'sum', no ignore_class); "
                f"{type(loss).__name__} has reduction={loss.reduction!r}"
                f"{'' if getattr(loss, 'ignore_class', None) is None else ' and ignore_class'}.")

    def backprop(self, model, x, y, sample_weight):
        """Forward and backward on this rank's rows, then the allreduce of the gradients; returns ``(loss, output)``."""
        share = self._share if self._share is not None else 1.0 / self.size
        self._share = None
        buckets = self._gradient_buckets(model)
        comm = self._comm
        comm.before_stats_sum = None if buckets is None else buckets.at_meeting
        try:
            value, out = model._backprop(x, y, sample_weight, grad_scale=self._loss_share(model, share))
        except NonFiniteError:
            comm.before_stats_sum = None
            if buckets is not None:  # the buffer is the model's again before it is filled
                buckets.drain("the allreduce of the gradients")
            if model.optimizer.on_nonfinite != "skip":
                raise
            # the other ranks are on their way to the allreduce: NaN gradients make every
            # rank's optimizer skip the step (a skipped step gives back the layers' state)
            value, out = math.nan, model._nan_output(x)
            model._step_loss = value
            for layer, key in model._refs:
                layer.grads[key].fill(np.nan)
        finally:
            comm.before_stats_sum = None
        # plain BN's moving statistics are final after the forward pass: their allreduce starts first and
        # completes while this rank waits in the gradients' (one wait for the two, no meeting of its own)
        stats = self._moving_statistics(model)
        pending = None if stats is None else self._comm.start_allreduce_(stats)
        flat = model._flat
        if buckets is not None:
            buckets.finish("the allreduce of the gradients")
        elif flat is not None:
            self._comm.allreduce_gradients_(flat[0], "the allreduce of the gradients")
        else:
            for layer, key in model._refs:
                g = layer.grads[key]
                buf = g if g.flags.c_contiguous else np.ascontiguousarray(g)
                self._comm.allreduce_timed_(buf, "the allreduce of the gradients")
                if buf is not g:
                    np.copyto(g, buf)
        if pending is not None:
            self._comm.finish(pending, "the average of the moving statistics")
            self._set_moving_statistics(stats)
        return value, out

    #: a part of the gradient buffer smaller than this (elements) is not started alone (see GradientBuckets)
    BUCKET_MIN = 16384

    def _gradient_buckets(self, model):
        """The model's :class:`GradientBuckets`, or None: one allreduce of the whole buffer after the backward pass.

        Parts only where they can start before the backward pass ends: the
        model's gradients in one flat buffer, a chain of layers (each layer's
        backward pass runs once, from the output down), every synchronized
        batch norm a layer of that chain (alone or fused with its
        activation), and the buffer holding the layers' gradients in the
        chain's order. ``NORMLAB_GRAD_BUCKETS=0`` turns them off; a positive
        value replaces ``BUCKET_MIN``, the fewest values a part is started with.
        """
        flat = model._flat
        cached = self._buckets
        if cached is not None and cached[0] is model and cached[1] is (None if flat is None else flat[0]):
            return cached[2]
        if cached is not None and cached[2] is not None:
            cached[2].free()
        plan = None
        setting = os.environ.get("NORMLAB_GRAD_BUCKETS", "").strip()
        min_size = int(setting) if setting.isdigit() else self.BUCKET_MIN
        if flat is not None and min_size > 0:
            plan = _bucket_plan(model, flat[0], min_size)
        buckets = None if plan is None else GradientBuckets(self._comm, flat[0], *plan)
        self._buckets = (model, None if flat is None else flat[0], buckets)
        return buckets

    def _moving_statistics(self, model):
        """The moving statistics of batch normalization layers that are not synchronized, as one float64 copy.

        Each rank's layer normalized its shard with the shard's statistics
        and fed them to its moving averages; their mean over the ranks
        (:meth:`_set_moving_statistics`) is what one process with ghost
        batches of the shards' size (``virtual_batch_size``) keeps, and keeps
        every rank's model the same. A skipped step gives the old values back
        (the layers' undo records). None without such layers.
        """
        if self._plain_buffers is None:
            from ..layers.normalization import BatchNormalization

            self._plain_buffers = [b for layer in _all_layers(model) if isinstance(layer, BatchNormalization)
                                   and layer._sync is None and layer._trainable for b in layer.buffers.values()]
        bufs = self._plain_buffers
        if not bufs:
            return None
        return np.concatenate([b.ravel() for b in bufs]).astype(np.float64)

    def _set_moving_statistics(self, summed: np.ndarray) -> None:
        """The summed statistics of :meth:`_moving_statistics`, divided by the ranks, into the layers' buffers."""
        summed /= self.size
        at = 0
        for b in self._plain_buffers:
            np.copyto(b, summed[at : at + b.size].reshape(b.shape), casting="unsafe")
            at += b.size

    # ---------------------------------------------------------- fit
    def begin_fit(self, model, data, initial_epoch: int, callbacks=None) -> tuple:
        """Broadcast rank 0's state and shard ``data``; returns ``(data, initial_epoch)``.

        ``callbacks`` (the fit's :class:`~normlab.callbacks.CallbackList`)
        decide which per-step collectives run (:meth:`_watch_callbacks`);
        without them, all of them, every step.
        """
        from ..models.data import ArraySource, Epochs

        owner = f"{type(model).__name__}.fit"
        self._check_loss(model, owner)
        src = data.source
        n = self.size

        def on_batch(share):
            self._share = share

        if isinstance(src, ArraySource):
            sizes = {min(src.batch_size, src.n), src.n % src.batch_size or src.batch_size}
            if min(sizes) < n:
                raise ValueError(
                    f"{owner}: DataParallel gives every one of the {n} ranks at least one sample of each global "
                    f"batch, but batch_size={src.batch_size} on {src.n} samples makes a batch of {min(sizes)}; "
                    f"choose a batch_size (and a number of samples) that leave at least {n} in every batch.")
            sharded = ShardedArraySource(src, self.rank, n, on_batch)
        else:
            def check(k):
                if k < n:
                    raise ValueError(f"{owner}: a batch of {k} samples cannot be split over {n} ranks "
                                     f"(DataParallel needs at least one sample per rank).")

            # a stream builds the model on its first batch: rank 0's weights are broadcast then
            lazy = not model.built or model._trainable_signature is None
            sharded = SlicedSource(src, self.rank, n, on_batch, check,
                                   on_first=(lambda: self.broadcast_state(model)) if lazy else None)
        initial_epoch, model._initial_step = self.broadcast_state(model, initial_epoch, model._initial_step)
        self._plain_buffers = None
        if callbacks is None:
            self._step_logs = self._step_stop = True
        else:
            self._watch_callbacks(callbacks)
        return Epochs(sharded, data.steps_per_epoch, data.owner), initial_epoch

    def broadcast_state(self, model, initial_epoch: int = 0, initial_step: int = 0) -> tuple[int, int]:
        """Rank 0's weights, buffers, optimizer state and generators on every rank; returns rank 0's ``(epoch, step)``."""
        comm = self._comm
        opt = model.optimizer
        binding = getattr(opt, "_binding", None) if opt is not None else None
        arrays = [a for layer in model.layers for a in list(layer.params.values()) + list(layer.buffers.values())]
        if binding is not None:
            arrays = [a for a in arrays if not np.shares_memory(a, binding.arena)]
        self._random_layers = [layer for layer in model.layers if hasattr(layer, "get_rng_state")]
        mine = {"arena": 0 if binding is None else int(binding.arena.size),
                "arrays": [[list(a.shape), a.dtype.str] for a in arrays]}
        meta = comm.bcast_json({**mine, "epoch": int(initial_epoch), "step": int(initial_step or 0)},
                               "the broadcast of rank 0's model")
        if {"arena": meta["arena"], "arrays": meta["arrays"]} != mine:
            raise ValueError(
                f"DataParallel: rank {self.rank}'s model or optimizer differs from rank 0's (its arrays are "
                f"{mine}, rank 0's {meta}); every rank must build the same model.")
        if binding is not None:
            comm.bcast_(binding.arena, "the broadcast of the optimizer's state")
            np.copyto(binding.shadow, binding.arena[: binding.shadow.size])
        for a in arrays:
            buf = a if a.flags.c_contiguous else np.ascontiguousarray(a)
            comm.bcast_(buf, "the broadcast of the weights")
            if buf is not a:
                np.copyto(a, buf)
        self.sync_generators(model)
        return int(meta["epoch"]), int(meta["step"])

    def sync_generators(self, model) -> None:
        """Rank 0's generators of the random layers, jumped ``rank`` times on rank ``rank``."""
        if not self._random_layers:
            return
        states = self._comm.bcast_json([layer.get_rng_state() for layer in self._random_layers],
                                       "the broadcast of the generators")
        for layer, state in zip(self._random_layers, states):
            if state is None:
                continue
            if self.rank:
                bg = getattr(np.random, state["bit_generator"])()
                bg.state = state
                if hasattr(bg, "jumped"):
                    state = bg.jumped(self.rank).state
            layer.set_rng_state(state)

    # ----------------------------------------------------- single batches
    def _split(self, owner, x, *arrays):
        k = len(x)
        if k < self.size:
            raise ValueError(f"{owner}: a batch of {k} samples cannot be split over {self.size} ranks "
                             f"(DataParallel needs at least one sample per rank).")
        a, b = span(k, self.rank, self.size)
        return (b - a) / k, [None if v is None else v[a:b] for v in (x, *arrays)]

    def train_on_batch(self, model, x, y, w):
        """One step on the global batch ``(x, y, w)`` split over the ranks; returns the logs over all of it."""
        owner = f"{type(model).__name__}.train_on_batch"
        self._check_loss(model, owner)
        share, (x, y, w) = self._split(owner, x, y, w)
        if model.optimizer._binding is None or not getattr(self, "_synced", False):
            self.broadcast_state(model)
            self._synced = True
        self._share = share
        value, out = model._train_step(x, y, w)
        metrics = [copy.copy(m) for m in model.metrics]
        for m in metrics:
            m.reset_state()
            m.update_state(y, out, metric_weight(m, w))
        return self._reduced(value * len(x), len(x), metrics)

    # --------------------------------------------------- evaluate/predict
    def evaluate_arrays(self, model, x, y, batch_size, sample_weight=None, callbacks=None) -> dict:
        """Loss (with penalties) and metrics over ``(x, y)``, each rank evaluating its contiguous part."""
        self._check_loss(model, f"{type(model).__name__}.evaluate")
        a, b = span(len(x), self.rank, self.size)
        loss = model.loss
        metrics = [copy.copy(m) for m in model.metrics]
        for m in metrics:
            m.reset_state()
        total = 0.0
        hooks = callbacks is not None and bool(callbacks.callbacks)
        step = (b - a) if not hooks else batch_size
        for i, lo in enumerate(range(a, b, max(step, 1))):
            hi = min(b, lo + step)
            xb, yb = x[lo:hi], y[lo:hi]
            wb = None if sample_weight is None else sample_weight[lo:hi]
            if hooks:
                callbacks.on_test_batch_begin(i)
            out = model._predict_local(xb, batch_size)
            if wb is not None or not loss._plain:
                value = loss.weighted_value(yb, out, wb)
            else:
                value = loss.value_from_logits(yb, out) if loss.from_logits else loss.value(yb, out)
            total += (1.0 if loss.reduction == "sum" else len(xb)) * value
            for m in metrics:
                m.update_state(yb, out, metric_weight(m, wb))
            if hooks:  # this rank's running values (the result is over all ranks)
                callbacks.on_test_batch_end(i, {"loss": total / (hi - a), **{m.name: m.result() for m in metrics}})
        logs = self._reduced(total, b - a, metrics, mean=loss.reduction != "sum")
        logs["loss"] += model._regularization_loss()
        return logs

    def predict_arrays(self, model, x, batch_size) -> np.ndarray:
        """Outputs for ``x``: each rank predicts its contiguous part; every rank gets all of them, in order."""
        counts = [span(len(x), r, self.size) for r in range(self.size)]
        a, b = counts[self.rank]
        shape = (0,) + tuple(model.output_shape_for((None,) + x.shape[1:])[1:])
        local = model._predict_local(x[a:b], batch_size) if b > a else np.empty(shape, model.dtype)
        local = local.astype(model.dtype, copy=False)
        return self._comm.allgatherv(local, [hi - lo for lo, hi in counts], "the gather of the predictions")


def configure_model(model, distribute):
    """What ``compile(distribute=...)`` sets up: returns the strategy the model's calls go through, or None.

    None when ``distribute`` is None or the job has one rank (training is
    then exactly the single-process one). Synchronized batch normalization
    layers are attached to the strategy's communicator (detached otherwise).
    """
    from ..layers.normalization import BatchNormalization

    if distribute is not None and not isinstance(distribute, DataParallel):
        raise TypeError(f"{type(model).__name__}.compile: 'distribute' must be None or a "
                        f"normlab.distributed.DataParallel, got {distribute!r}.")
    active = distribute if distribute is not None and distribute.size > 1 else None
    for layer in _all_layers(model):
        if isinstance(layer, BatchNormalization):
            layer._sync = active._comm if active is not None and layer.synchronized else None
    if active is not None:
        active._synced = False
        active._plain_buffers = None
        if active._buckets is not None and active._buckets[2] is not None:
            active._buckets[2].free()
        active._buckets = None
    return active
