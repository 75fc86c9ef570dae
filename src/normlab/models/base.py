"""What every model shares: compile, the training step, fit/evaluate/predict, weights.

Subclasses (:class:`~normlab.Sequential`, the functional :class:`~normlab.Model`)
define the structure: ``layers`` (in execution order), ``_output_layer``,
``built``, ``input_shape``, ``build``, ``_ensure_built``, ``output_shape_for``,
``_forward(x, training)``, ``_backward(grad, fused)``, ``get_config`` and
``from_config``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import numbers
import sys
from typing import Any, Sequence

import numpy as np

from .. import losses as _losses
from .. import metrics as _metrics
from .. import regularizers as _regularizers
from ..callbacks.base import Callback, CallbackList, History
from ..callbacks.progbar import ProgbarLogger, resolve_verbose
from ..errors import NonFiniteError
from ..kernels.checks import all_finite
from .._registry import LookupFailed, argument_error
from .._validation import Boolean, Interval, NoneOk, real_array, validate_params
from ..layers.base import Layer, as_float_array
from ..utils import _random
from ..losses import SparseCategoricalCrossentropy
from ..kernels import _backend, _threads
from ..kernels import optim as K_optim
from ._checks import (
    metric_weight,
    _COUNT,
    _SIZE,
    _attributes,
    _cast_checked,
    _check_bool,
    _check_class_weight,
    _check_finite,
    _check_int,
    _class_weights,
    _layer_tree,
)
from .executor import Executor, next_stamp
from .data import ArraySource, Epochs, is_stream, make_source
from .training import BatchIterator, run_epochs, split_validation

__all__ = ["BaseModel"]


def _distributed(method):
    """A model call that, under ``compile(distribute=DataParallel())`` on several ranks, ends the job on an error.

    See :meth:`normlab.distributed.DataParallel.guard`: another rank may be
    waiting in a collective for this one. Without a strategy: the call itself.
    """

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        dist = self._dist
        if dist is None:
            return method(self, *args, **kwargs)
        with dist.guard(f"{type(self).__name__}.{method.__name__}"):
            return method(self, *args, **kwargs)

    return call


def _compile_lookup(owner: str, arg: str, value, get, base: type, extras: tuple, in_list: bool = False):
    """``get(value)`` for ``compile``'s argument ``arg``, a failed lookup worded as the parameter template.

    A name, config or type that no registry resolves raises the template
    naming ``owner`` (``Sequential.compile``) and ``arg``, with the accepted
    names; ``in_list``: ``value`` is one entry of the list ``arg``.
    """
    try:
        return get(value)
    except LookupFailed as exc:
        err = argument_error(owner, arg, value, exc, base, extras)
        if err is None:
            raise
        if in_list:  # the template's "must be" describes one entry of the list
            err = type(err)(str(err).replace(f"The {arg!r} parameter of {owner} must be",
                                             f"Each entry of the {arg!r} parameter of {owner} must be", 1))
        raise err from None


_INTP = np.dtype(np.intp)  # (a dtype compared with a type converts the type: 0.3 us, every step)


class BaseModel:
    """Training, evaluation, prediction and weights for any model structure."""

    def _init_training_state(self) -> None:
        self.optimizer = None
        self.loss = None
        self.metrics: list[_metrics.Metric] = []
        self._metric_ids: list = []
        self._weighted_metric_ids: list = []
        self.compiled = False
        self.stop_training = False
        self.stop_evaluating = False
        self.stop_predicting = False
        self.history: History | None = None
        self._fused = False
        self._trainable_signature: tuple | None = None
        self._refs: list[tuple[Layer, str]] = []
        self._flat: tuple[np.ndarray, np.ndarray] | None = None  # (gradients, parameters): the optimizer's
        self._flat_binding = None  # (optimizer, its binding) that the layers' arrays are views of
        self._step_loss = None  # the loss of the last training step, once computed
        self._constrained: list = []
        self.distribute = None
        self._dist = None  # the strategy the calls go through: DataParallel on several ranks, else None

    @property
    def _output_layer(self) -> Layer:
        return self.layers[-1]

    def _layer_output_shapes(self) -> list:
        """Output shape of each layer in ``self.layers`` (``None`` where unknown)."""
        shape, out = self.input_shape, []
        for layer in self.layers:
            shape = layer.compute_output_shape(shape) if shape is not None else None
            out.append(shape)
        return out

    @property
    def dtype(self):
        return self.layers[0].dtype if self.layers else None

    def _check_input(self, x, who: str) -> np.ndarray:
        owner = f"{type(self).__name__}.{who}"
        x = as_float_array(x, who=owner)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"{owner}: 'x' must be a non-empty batch, got shape {x.shape}.")
        if x.size == 0:
            raise ValueError(f"{owner}: 'x' must hold at least one value per sample, got shape {x.shape}.")
        expected = self.input_shape if self.built else self._declared_input_shape()
        if expected is not None and (len(expected) != x.ndim or any(
            e is not None and e != s for e, s in zip(expected[1:], x.shape[1:])
        )):
            raise ValueError(f"{owner}: 'x' must have shape {tuple(expected)} (the model's input shape), got {x.shape}.")
        if self.built:
            if x.dtype != self.dtype:
                # finiteness is checked after the cast: a float64 value above float32's range is an error here
                return _cast_checked(x, self.dtype, owner, "x") if x.dtype.itemsize > self.dtype.itemsize \
                    else self._finite(x.astype(self.dtype), owner)
        return self._finite(x, owner)

    def _declared_input_shape(self) -> tuple | None:
        """The input shape an unbuilt model declares (an ``Input``), batch axis included; None if none."""
        return None

    def _build_on(self, x: np.ndarray, owner: str, rng=None) -> None:
        """Build the model on ``x`` if needed; a layer that refuses it is reported as a problem of 'x'."""
        if self.built:
            return
        try:
            self._ensure_built(x, rng)
        except (ValueError, TypeError) as exc:
            cls = type(exc) if type(exc) in (ValueError, TypeError) else ValueError
            raise cls(f"{owner}: 'x' of shape {x.shape} does not fit the model: {exc}") from exc

    def _finite(self, x: np.ndarray, owner: str) -> np.ndarray:
        if self._dist is not None:  # several ranks: inside a guarded call each checks its own part of x
            self._dist.check_finite(x, owner)
        else:
            _check_finite(x, owner, "x")
        return x

    @contextlib.contextmanager
    def _all_or_nothing(self):
        """Give back what building, compiling for training and binding changed if the block raises.

        Wraps what a call does before its first training step (checking the
        data, building the layers, binding the optimizer, ``on_train_begin``),
        and, in ``fit``, what runs until the first step commits (the
        callbacks' ``on_epoch_begin`` and ``on_train_batch_begin``, a
        failing first step), so that a failed call leaves an unbuilt model unbuilt: a later
        ``fit(seed=...)`` reproduces a fresh model, and a wrong-width ``x``
        does not fix the input shape. None of these write an array in place,
        so restoring the attributes of the model, its layers and its
        optimizer (dicts and lists copied) restores their state.
        """
        objects = [self, *_layer_tree(self.layers)]
        opt = self.optimizer
        if opt is not None:
            objects.append(opt)
        saved = [(obj, _attributes(obj)) for obj in objects]
        mark = None if opt is None else (opt.iterations, opt.skipped_steps)
        try:
            yield
        except BaseException:
            if opt is not None and (opt.iterations, opt.skipped_steps) != mark:
                raise  # a step has committed: the model has trained, and each step is a transaction of its own
            for obj, attrs in saved:
                state = vars(obj)
                state.clear()
                state.update(attrs)
            raise

    # ------------------------------------------------------------ compiling
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, distribute=None, weighted_metrics=None) -> None:
        """Configure training.

        Parameters
        ----------
        optimizer : str, dict or Optimizer
            ``"sgd"``, ``"adam"``, ... or an instance from :mod:`normlab.optimizers`.
        loss : str, dict or Loss
            ``"mse"``, ``"binary_crossentropy"``, ``"categorical_crossentropy"``,
            ``"sparse_categorical_crossentropy"`` or an instance.
        metrics : list, optional
            Names (``"accuracy"`` resolves from the loss) or Metric instances.
        weighted_metrics : list, optional
            Keras's weighted metrics: metrics given ``sample_weight`` (and
            ``class_weight``). A name that ``metrics`` already uses is logged
            as ``"weighted_<name>"``, as in Keras. (normlab weighs the
            ``metrics`` too; Keras does not, see docs/keras.md.)
        distribute : normlab.distributed.DataParallel, optional
            Train on the ranks of an MPI job (``mpiexec -n N``): each takes its
            rows of every global batch, gradients are averaged with one
            allreduce per step. In one process it changes nothing. See
            :mod:`normlab.distributed`.
        """
        from .. import optimizers as _optimizers
        from ..distributed.strategy import configure_model
        from ._compile_args import for_one_output

        # Keras's per-output forms ([loss], {"output_name": loss}, {"output_name": [metrics]}) for the one output
        owner, names = f"{type(self).__name__}.compile", getattr(self, "output_names", None)
        loss = for_one_output(loss, "loss", names, owner)
        metrics = for_one_output(metrics, "metrics", names, owner)
        weighted_metrics = for_one_output(weighted_metrics, "weighted_metrics", names, owner)
        for arg, value in (("metrics", metrics), ("weighted_metrics", weighted_metrics)):
            if value is not None and not isinstance(value, (list, tuple)):
                raise TypeError(f"{type(self).__name__}.compile: '{arg}' must be a list of metric names or Metric "
                                f"instances, got {value!r} (write {arg}=[{value!r}]).")
        opt = _compile_lookup(owner, "optimizer", optimizer, _optimizers.get, _optimizers.Optimizer,
                              ("a GradientTransformation (normlab.optim.transforms.chain(...))",))
        loss_obj = _compile_lookup(owner, "loss", loss, _losses.get, _losses.Loss,
                                  ("a loss function of normlab.losses",))
        ms = [_compile_lookup(owner, "metrics", m, lambda v: _metrics.get(v, loss_obj), _metrics.Metric,
                              ("a function fn(y_true, y_pred)",), in_list=True) for m in (metrics or [])]
        weighted = [_compile_lookup(owner, "weighted_metrics", m, lambda v: _metrics.get(v, loss_obj),
                                    _metrics.Metric, ("a function fn(y_true, y_pred)",), in_list=True)
                    for m in (weighted_metrics or [])]
        taken = {m.name for m in ms}
        for k, m in enumerate(weighted):
            if m.name in taken:  # Keras's name for a weighted twin; the caller's instance keeps its own
                m = weighted[k] = copy.deepcopy(m)
                m.name = f"weighted_{m.name}"
            taken.add(m.name)
        # Keras weighs only weighted_metrics by sample_weight / class_weight; plain metrics count every sample once
        for m in ms:
            m._sample_weighted = False
        for m in weighted:
            m._sample_weighted = True
        dist = configure_model(self, distribute)
        self.distribute, self._dist = distribute, dist
        self.optimizer, self.loss, self.metrics = opt, loss_obj, ms + weighted
        self._metric_ids = list(metrics or [])
        self._weighted_metric_ids = list(weighted_metrics or [])
        self.compiled = True
        self._trainable_signature = None

    def _require_compiled(self, who: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"{type(self).__name__}.{who}: call compile(optimizer, loss) first.")

    def _trainable_flags(self) -> tuple:
        """Every layer's ``trainable`` flag (a nested model's layers too): a change needs a new compile."""
        return tuple(layer.trainable for layer in self.layers)

    def _prepare_training(self) -> None:
        signature = self._trainable_flags()
        if self._trainable_signature is None:
            self._refs = [(l, k) for l in self.layers for k in l.trainable_params]
            self._trainable_signature = signature
            last = self._output_layer
            self._fused = (
                not self.loss.from_logits
                and self.loss.fused_activation is not None
                and getattr(last, "activation", None) == self.loss.fused_activation
                and hasattr(last, "backward_from_logits")
            )
            self._flatten_parameters()
            program, output = self._program()
            # synchronized batch normalization on several ranks runs its own passes (not the fused pair's)
            self._executor = Executor(program, output,
                                      fuse=self._fuse_layers and (self._dist is None or self._dist.fuse_ok(self)))
            self._regularized = self._regularized_layers()
            self._penalties = self._penalty_plan(self._regularized)
            # weight constraints (Keras: applied after the optimizer's update); most models have none
            self._constrained = [layer for layer in self.layers if layer._constraints]
            loss = self.loss
            # a softmax output trained with sparse cross-entropy: one kernel for output, loss and gradient
            self._head_layer = last  # (the output layer, looked up once: nested models walk their tree for it)
            self._sparse_head = (
                self._fused
                and type(loss) is SparseCategoricalCrossentropy
                and not loss.label_smoothing
                and loss._plain
                and last.activation == "softmax"
                and hasattr(last, "_train_forward_sparse_ce")
            )
            # the step runs the backward pass of every layer (each is an ancestor of the
            # output), which overwrites its gradients: no zeroing needed
            self._fresh_grads = all(layer._writes_fresh_grads for layer, _ in self._refs)
        elif signature != self._trainable_signature:
            raise RuntimeError(
                "A layer's 'trainable' flag changed since the model was compiled; call compile() "
                "again so that the optimizer sees the new set of parameters."
            )

    #: False runs every layer on its own in training (no fused layers): the
    #: tests compare the two, which agree bit for bit
    _fuse_layers = True

    def _program(self) -> tuple[list, int]:  # pragma: no cover - interface
        """The layers in execution order with the value indices each reads, and the output's index.

        Value 0 is the model's input; the ``k``-th entry writes value ``k + 1``
        (see :mod:`normlab.models.executor`).
        """
        raise NotImplementedError

    def _flatten_parameters(self) -> None:
        """Hand the trainable parameters and their gradients to the optimizer (``optimizer.bind``).

        The optimizer lays them out as it needs (one flat buffer per dtype,
        so that a step is a few vectorised calls, or one fused kernel) and
        returns views that the layers use from now on, updated in place.
        ``_flat`` is ``(gradients, parameters)`` when they are one flat
        buffer, so that the gradients can be zeroed in one call.
        """
        self._flat = None
        self._flat_binding = None
        refs = self._refs
        if not refs:
            return
        opt = self.optimizer
        params, grads = opt.bind(
            [l.params[k] for l, k in refs], [l.grads[k] for l, k in refs], [f"{l.name}/{k}" for l, k in refs]
        )
        for (layer, key), p, g in zip(refs, params, grads):
            layer.params[key] = p
            layer.grads[key] = g
        self._flat = opt.flat_buffers
        self._flat_binding = (opt, opt._binding)

    _FLAT_NAME = "<all trainable parameters>"

    def _apply_optimizer(self) -> None:
        opt = self.optimizer
        bound = self._flat_binding
        if bound is not None and bound[0] is opt and bound[1] is opt._binding:
            opt.step()
            return
        # the optimizer was rebound elsewhere (or never): apply() checks the arrays against it
        refs = self._refs
        if self._flat is not None:
            opt.apply([self._flat[0]], [self._flat[1]], names=[self._FLAT_NAME])
        else:
            opt.apply([l.grads[k] for l, k in refs], [l.params[k] for l, k in refs],
                      names=[f"{l.name}/{k}" for l, k in refs])

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        return [p for l in self.layers for p in l.trainable_params.values()]

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """The layer called ``name``, or at ``index`` in :attr:`layers` (Keras's ``get_layer``)."""
        owner = f"{type(self).__name__}.get_layer"
        if (name is None) == (index is None):
            raise ValueError(f"{owner}: give exactly one of 'name' and 'index'.")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not \
                    -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"{owner}: 'index' must be an int in [0, {len(self.layers)}), got {index!r}.")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"{owner}: no layer named {name!r}; the layers are {[l.name for l in self.layers]}.")

    @property
    def weights(self) -> list[np.ndarray]:
        """Keras's ``model.weights``: every layer's parameters then buffers, in layer order (the arrays)."""
        return [w for l in self.layers for w in l.weights]

    @property
    def non_trainable_weights(self) -> list[np.ndarray]:
        """Keras's ``non_trainable_weights``: the buffers, and the parameters of frozen layers."""
        return [w for l in self.layers for w in l.non_trainable_weights]

    def _loss_and_output_grad(self, y, out, sample_weight=None):
        """Return ``(loss_value, gradient, fused)`` for prepared targets ``y`` (and checked weights)."""
        loss = self.loss
        if sample_weight is not None or not loss._plain:
            if self._fused:
                return (*loss.weighted_value_and_gradient(y, self._output_layer.logits, sample_weight, logits=True), True)
            return (*loss.weighted_value_and_gradient(y, out, sample_weight), False)
        if self._fused:
            return (*self.loss.value_and_gradient_from_logits(y, self._output_layer.logits), True)
        if self.loss.from_logits:
            return (*self.loss.value_and_gradient_from_logits(y, out), False)
        return self.loss.value(y, out), self.loss.gradient_wrt_output(y, out), False

    def _regularized_layers(self) -> list:
        # most models have no penalty: skip the per-layer calls (a small step pays for each)
        return [layer for layer in self.layers if layer._regularizers]

    def _regularization_loss(self, layers=None) -> float:
        layers = self._regularized_layers() if layers is None else layers
        return sum(layer.regularization_loss() for layer in layers)

    @staticmethod
    def _penalty_plan(layers):
        """The step's penalties as ``[(layer, [(key, regularizer, scratch)])]``, or None.

        For layers that keep :class:`~normlab.layers.Layer`'s own ``regularization_loss``
        and ``add_regularization_grads`` and whose regularizers are the stock
        :class:`~normlab.regularizers.L1L2` family (L1, L2, L1L2): the step then computes
        them in one loop (:meth:`_step_penalty`, :meth:`_add_penalty_grads`) instead of a
        generator and a ``sum`` per layer, and adds the L2 gradient
        through a scratch array kept from step to step instead of a new one. The same
        numbers in the same order: the bits do not change. A batch of 200 rows of
        scikit-learn's MLP (two L2 kernels) spent about 16 us of a ~250 us step on
        its penalties, now about 6. Any other layer or regularizer: None (the general path).
        """
        if not layers:
            return None
        plan = []
        for layer in layers:
            cls = type(layer)
            if cls.regularization_loss is not Layer.regularization_loss or \
                    cls.add_regularization_grads is not Layer.add_regularization_grads:
                return None
            terms = []
            for key, reg in layer._regularizers.items():
                rcls = type(reg)
                if not isinstance(reg, _regularizers.L1L2) or rcls.penalty is not _regularizers.L1L2.penalty or \
                        rcls.gradient is not _regularizers.L1L2.gradient:
                    return None
                terms.append((key, reg, [None, None]))  # [NumPy's scratch array, what add_scaled took]
            plan.append((layer, terms))
        return plan

    def _step_penalty(self) -> float:
        """``self._regularization_loss(self._regularized)`` for a :meth:`_penalty_plan`: the same sums in the same order."""
        total = 0.0
        for layer, terms in self._penalties:
            if layer._trainable:
                part = 0
                for key, reg, _ in terms:
                    part += reg.penalty(layer.params[key])
                total += float(part)
        return total

    def _add_penalty_grads(self) -> None:
        """Every layer's ``add_regularization_grads()`` for a :meth:`_penalty_plan`."""
        numba = _backend.numba_enabled()
        for layer, terms in self._penalties:
            if not layer._trainable:
                continue
            grads = layer.grads
            for key, reg, scratch in terms:
                w = layer.params[key]
                g = grads[key]
                if reg.l1:
                    g += reg.gradient(w)
                    continue
                l2 = reg.l2
                seen = scratch[1]
                if seen is not None and seen[0] is g and seen[1] is w and seen[2] is l2 and numba:
                    # the arrays and the coefficient (the same objects) add_scaled took last step
                    K_optim.add_scaled_again(g, w, seen[3])
                    continue
                c = 2.0 * l2
                if K_optim.add_scaled(g, w, c):  # one pass, the same two roundings
                    scratch[1] = (g, w, l2, g.dtype.type(c))
                    continue
                buf = scratch[0]
                if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
                    buf = scratch[0] = np.empty_like(w)
                # (2 l2) * w, then added: the two roundings of L1L2.gradient's ``(2.0 * l2) * w`` and ``+=``
                np.multiply(w, 2.0 * reg.l2, out=buf)
                np.add(g, buf, out=g)

    def _reset_grads(self) -> None:
        """Mark every gradient zero before a backward pass (zeroing only what it would not overwrite)."""
        if self._flat is not None:
            if not self._fresh_grads:
                self._flat[0].fill(0)
            for layer in self.layers:
                layer._grads_zero = True
        else:
            for layer in self.layers:
                layer.zero_grads()

    # ------------------------------------------------------------ the step
    def _forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The model on a checked batch: the training pass (of a compiled model) or inference."""
        if training:
            return self._executor.forward(x)
        program, output = self._program()
        values = [x]
        for layer, inputs in program:
            arg = [values[i] for i in inputs] if layer.multi_input else values[inputs[0]]
            values.append(layer.call(arg, False))
        return values[output]

    def _gradients(self, x: np.ndarray, y: np.ndarray, sample_weight=None) -> tuple[float, np.ndarray]:
        """The first half of a training step: forward, loss with penalties, backward into ``grads``.

        Returns ``(loss, output)``. It changes the layers' state (moving
        statistics, generators) as a step does: :meth:`_train_step` and
        :meth:`compute_gradients` give that back when they must. Under a
        distribution strategy the gradients are summed over the ranks
        before the penalties' gradients are added.
        """
        dist = self._dist
        value, out = self._backprop(x, y, sample_weight) if dist is None else \
            dist.backprop(self, x, y, sample_weight)
        if self._penalties is not None:
            self._add_penalty_grads()
        else:
            for layer in self._regularized:
                layer.add_regularization_grads()
        return value, out

    def _backprop(self, x, y, sample_weight=None, grad_scale: float = 1.0) -> tuple[float, np.ndarray]:
        """Forward, loss with penalties, backward of the loss (times ``grad_scale``) into ``grads``; no penalty gradients."""
        ex = self._executor
        if self._sparse_head and (y.dtype is _INTP or y.dtype == _INTP) and sample_weight is None:
            last = self._head_layer
            h = ex.forward_up_to_output(x)
            head = last._train_forward_sparse_ce(h, y)
            if head is None:  # the kernel does not apply (size, NaN logits): the general loss
                out = last.call(h, True)
                value, grad, fused = self._loss_and_output_grad(y, out)
            else:
                value, grad, out = head
                fused = True
        else:
            out = ex.forward(x)
            value, grad, fused = self._loss_and_output_grad(y, out, sample_weight)
        regularized = self._regularized  # (listed at compile time)
        if regularized:
            value += self._step_penalty() if self._penalties is not None else self._regularization_loss(regularized)
        self._step_loss = value  # for the trainer, should the optimizer refuse a non-finite step
        if grad_scale != 1.0:  # this rank's share of the global batch's loss
            grad = grad * grad_scale
        self._reset_grads()
        ex.backward(grad, fused)
        return value, out

    def _train_step(self, x: np.ndarray, y: np.ndarray, sample_weight=None) -> tuple[float, np.ndarray]:
        """One optimizer step on a validated batch; returns ``(loss, output)``.

        A transaction: if anything raises before the optimizer has committed
        its update (a :class:`KeyboardInterrupt` included, at any line), the
        layers give back what the step changed (moving statistics, random
        generators) and the optimizer has changed nothing, so the model is
        bit for bit as it was. The optimizer's commit (parameters, slots and
        step counters in one indivisible update) is the step's last act;
        nothing is undone after it.
        """
        opt = self.optimizer
        skipped = opt.skipped_steps
        mark = opt.iterations + skipped
        stateful = self._executor.stateful
        stamp = next_stamp()
        for layer in stateful:
            layer._begin_step(stamp)
        self._step_loss = None
        try:
            if _threads._held is None:
                # BLAS held on one thread while normlab's kernels split the work: OpenBLAS's idle workers would
                # otherwise busy-wait on the cores those kernels use (kernels._threads.one_pool)
                with _threads.one_pool():
                    value, out = self._gradients(x, y, sample_weight)
                    self._apply_optimizer()
            else:  # held already (fit holds it for an epoch's steps): nested blocks change nothing
                value, out = self._gradients(x, y, sample_weight)
                self._apply_optimizer()
        except BaseException as exc:
            if opt.iterations + opt.skipped_steps != mark:  # the optimizer committed
                raise
            for layer in stateful:
                layer._rollback(stamp)
            if type(exc) is NonFiniteError and opt.on_nonfinite == "skip" and opt._binding is not None:
                # a layer found the step's values non-finite (or overflowing) before the optimizer
                # could: the step is skipped as the optimizer skips one of non-finite gradients
                opt._refuse(float("nan"), None)
                self._step_loss = float("nan")
                return self._step_loss, self._nan_output(x)
            raise
        if self._constrained and opt.skipped_steps == skipped:
            # Keras applies constraints after the optimizer's update (a skipped step changed nothing)
            for layer in self._constrained:
                layer.apply_constraints()
        if stateful and opt.skipped_steps != skipped:
            # a step skipped for non-finite gradients changes nothing: no moving statistics
            # from its (likely non-finite) batch, no noise drawn
            for layer in stateful:
                layer._rollback(stamp)
        return value, out

    def _nan_output(self, x: np.ndarray) -> np.ndarray:
        """The output of a skipped step whose forward pass did not finish: NaN, of the output's shape."""
        shape = (len(x),) + tuple(self.output_shape_for((None,) + x.shape[1:])[1:])
        return np.full(shape, np.nan, self.dtype)

    @contextlib.contextmanager
    def _state_kept(self):
        """Run training passes that leave no layer state changed: it is given back afterwards."""
        stateful = self._executor.stateful
        stamp = next_stamp()
        for layer in stateful:
            layer._begin_step(stamp)
        try:
            yield
        finally:
            for layer in stateful:
                layer._rollback(stamp)

    # gradient-check hooks (normlab.testing.check_model_gradients)
    def compute_gradients(self, x, y) -> dict:
        """Gradients of the training loss on ``(x, y)`` without updating anything.

        The first half of :meth:`_train_step`; the layers' state (moving
        statistics, generators) is given back afterwards.
        """
        self._require_compiled("compute_gradients")
        with self._setup_guard():
            x, yp = self._prepare_xy(x, y, "compute_gradients")
            self._prepare_training()
        with self._state_kept():
            self._gradients(x, yp)
        return {(l, k): l.grads[k].copy() for l, k in self._refs}

    def compute_loss_value(self, x, y) -> float:
        """The training-mode loss (with penalties) on ``(x, y)``, without updating anything."""
        x = self._check_input(x, "compute_loss_value")
        self._prepare_training()
        with self._state_kept():
            out = self._forward(x, True)
        yp = self.loss.prepare_targets(y, out.shape)
        value, _, _ = self._loss_and_output_grad(yp, out)
        return value + self._regularization_loss()

    # ------------------------------------------------------------ data prep
    def _prepare_xy(self, x, y, who: str, rng=None):
        """Check ``(x, y)`` and return them in the model's dtype, building the model on ``x`` if needed.

        Call it inside :meth:`_all_or_nothing` when the model may be unbuilt.
        """
        owner = f"{type(self).__name__}.{who}"
        x = self._check_input(x, who)
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(
                f"{owner}: 'x' and 'y' must have the same number of samples, "
                f"got {len(x)} and {y.shape[0] if y.ndim else 'a scalar'}."
            )
        self._build_on(x, owner, rng)
        x = _cast_checked(x, self.dtype, owner, "x")
        out_shape = (len(x),) + tuple(self.output_shape_for((None,) + x.shape[1:])[1:])
        y = self.loss.prepare_targets(y, out_shape, who=owner)
        if y.dtype.kind == "f" and y.dtype != self.dtype:
            y = _cast_checked(y, self.dtype, owner, "y")
        return x, y

    # -------------------------------------------------------------- training
    @_distributed
    def fit(
        self,
        x=None,
        y=None,
        batch_size: int | None = 32,
        epochs: int = 1,
        verbose: Any = "auto",
        callbacks: Sequence[Callback] | None = None,
        validation_split: float = 0.0,
        validation_data=None,
        shuffle: bool = True,
        class_weight: dict | None = None,
        sample_weight=None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_batch_size: int | None = None,
        validation_freq: int = 1,
        seed: int | None = None,
    ) -> History:
        """Train for ``epochs`` epochs on ``(x, y)`` (Keras 3's arguments, in Keras's order, and ``seed``).

        Parameters
        ----------
        x : array, PyDataset, or generator / iterable of batches
            Arrays with ``y``; or a :class:`normlab.utils.PyDataset`, a
            generator or another iterable whose batches are ``(x, y)`` or
            ``(x, y, sample_weight)`` (then ``y`` and ``sample_weight`` are
            not given here). See :mod:`normlab.models.data`.
        y : array
        batch_size : int, default 32
            For arrays (a dataset or a generator makes its own batches).
        epochs : int, default 1
        verbose : "auto", 0, 1 or 2
            1: a progress bar per epoch on a terminal (elsewhere one line per
            epoch); 2: one line per epoch; 0: silent; "auto": 1 on an
            interactive terminal, else 2.
        callbacks : list of Callback
        validation_split : float in [0, 1)
            Fraction of the arrays, taken from the *end* before shuffling
            (Keras), held out for validation.
        validation_data : (x_val, y_val) or (x_val, y_val, w_val), PyDataset or iterable, optional
            Overrides ``validation_split``.
        shuffle : bool, default True
            Reshuffle the training samples (a PyDataset: its batch order) every epoch.
        class_weight : dict, optional
            ``{class: weight}``: each sample's loss and metrics are weighted
            by its class's weight (1 for a class not listed), times its
            ``sample_weight``. The class is the sparse label, the argmax of a
            one-hot target, or the rounded binary target.
        sample_weight : array of shape (N,), optional
            Per-sample weights of the loss and the metrics, as Keras weighs
            them (see :mod:`normlab.losses`).
        initial_epoch : int, default 0
            Epoch to start counting from (for resuming; a
            ``callbacks.BackupAndRestore`` sets it, and the steps of that
            epoch already taken, from its backup).
        steps_per_epoch : int, optional
            Steps per epoch. With arrays, an epoch of ``n`` steps continues
            through the (shuffled) data where the last one stopped: a
            validation, and an ``EarlyStopping`` check, every ``n`` steps.
            Required to bound an endless generator.
        validation_steps : int, optional
            Batches of a validation dataset or generator to evaluate (all by default).
        validation_batch_size : int, optional
            Batch size of the validation arrays (default ``batch_size``).
        validation_freq : int, default 1
            Validate after every ``validation_freq``-th epoch.
        seed : int, optional
            Seeds the shuffling and, if the model is not built yet, the weight
            initialization: the same seed gives the same run, bit for bit.

        Returns
        -------
        History
            ``history.history`` maps ``"loss"``, each metric, and their
            ``"val_"`` versions to per-epoch lists, plus
            ``"learning_rate"`` (the rate for the next step) and
            ``"global_norm"`` (the epoch's mean global L2 norm of the
            gradients before clipping, regularizer gradients included).
        """
        owner = f"{type(self).__name__}.fit"
        self._require_compiled("fit")
        validate_params(
            owner,
            {
                "batch_size": [NoneOk(), *_SIZE],
                "epochs": _COUNT,
                "initial_epoch": _COUNT,
                "validation_split": [Interval(numbers.Real, 0, 1, closed="left")],
                "shuffle": [Boolean()],
                "seed": [NoneOk(), *_COUNT],
                "steps_per_epoch": [NoneOk(), *_SIZE],
                "validation_steps": [NoneOk(), *_SIZE],
                "validation_batch_size": [NoneOk(), *_SIZE],
                "validation_freq": _SIZE,
                "class_weight": [NoneOk(), dict],
            },
            {"batch_size": batch_size, "epochs": epochs, "initial_epoch": initial_epoch,
             "validation_split": validation_split, "shuffle": shuffle, "seed": seed,
             "steps_per_epoch": steps_per_epoch, "validation_steps": validation_steps,
             "validation_batch_size": validation_batch_size, "validation_freq": validation_freq,
             "class_weight": class_weight},
        )
        batch_size = 32 if batch_size is None else int(batch_size)
        epochs, initial_epoch = int(epochs), int(initial_epoch)
        class_weight = _check_class_weight(class_weight, owner)
        verbose = resolve_verbose(verbose, owner)
        callbacks = self._check_callbacks(callbacks, owner)
        stream = is_stream(x)
        if x is None or (y is None and not stream):
            raise ValueError(f"{owner}: 'x' and 'y' are required (or 'x' a PyDataset or a generator of batches).")
        if stream and validation_split:
            raise ValueError(f"{owner}: 'validation_split' needs arrays; with a PyDataset or a generator, "
                             f"pass 'validation_data'.")
        # fit(seed=None) after normlab.utils.set_random_seed(s) is reproducible too, as in Keras
        entropy = np.random.SeedSequence(seed).entropy if seed is not None else _random.fresh_entropy()
        init_rng = BatchIterator.stream(entropy, 0)
        with self._all_or_nothing():
            if stream:
                source = make_source(x, y, sample_weight, self._stream_check("fit", class_weight, init_rng),
                                     owner=owner, shuffle=bool(shuffle), entropy=entropy)
            else:
                x, y = self._prepare_xy(x, y, "fit", init_rng)
                w = self._sample_weights(y, sample_weight, class_weight, owner, len(x))
                if validation_data is None and validation_split > 0:
                    if w is None:
                        x, y, validation_data = split_validation(x, y, validation_split, owner)
                    else:
                        x, y, w, validation_data = split_validation(x, y, validation_split, owner, w)
                self._prepare_training()
                source = ArraySource(x, y, w, batch_size=batch_size, shuffle=bool(shuffle), entropy=entropy)
            validate = None
            if validation_data is not None:
                validate = self._validation(validation_data, validation_batch_size or batch_size,
                                            validation_steps, owner)
            data = Epochs(source, steps_per_epoch, owner)
            self.history = History()
            # History (and the progress bar) after the user's callbacks, so that
            # what they add to the epoch logs is recorded (and shown), as in Keras
            cbs = callbacks + [self.history] + ([ProgbarLogger(verbose)] if verbose else [])
            cb = CallbackList(cbs, model=self, epochs=epochs, steps=data.steps, verbose=verbose,
                              **({"validation_freq": int(validation_freq)} if validate is not None else {}))
            self.stop_training = False
            self._initial_epoch = None  # a callback (BackupAndRestore) may choose the epoch to resume at
            self._initial_step = 0  # ... and the steps of that epoch already taken
            # a callback that rejects its arguments here (a checkpoint template, a folder) fails the call
            # before any step: the model is as it was
            cb.on_train_begin()
            if self._initial_epoch is not None:
                initial_epoch = int(self._initial_epoch)
            run_epochs(self, data, cb, epochs=epochs, initial_epoch=initial_epoch, validate=validate,
                       validation_freq=int(validation_freq))
        return self.history

    def _stream_check(self, who: str, class_weight=None, rng=None, *, targets: bool = True):
        """The check of each batch of a stream: ``(x, y, w)`` prepared, the model built on the first."""
        owner = f"{type(self).__name__}.{who}"

        def check(xb, yb, wb):
            if not targets:
                x = self._inference_input(xb, who)
                return x, None, None
            if yb is None:
                raise ValueError(f"{owner}: a batch of 'x' holds no targets; batches must be (x, y) or "
                                 f"(x, y, sample_weight).")
            xb, yb = self._prepare_xy(xb, yb, who, rng)
            wb = self._sample_weights(yb, wb, class_weight, owner, len(xb))
            if who == "fit" and self._trainable_signature is None:
                self._prepare_training()
            return xb, yb, wb

        return check

    def _sample_weights(self, y, sample_weight, class_weight, owner: str, n: int):
        """The checked weights of the samples of prepared targets ``y``: ``sample_weight`` times their class weights."""
        w = None if sample_weight is None else self.loss.check_sample_weight(sample_weight, n, owner)
        if class_weight:
            cw = _class_weights(y, class_weight, owner)
            w = cw if w is None else w * cw.reshape(cw.shape + (1,) * (w.ndim - 1))
        return w

    def _validation(self, validation_data, batch_size: int, steps, owner: str):
        """A callable giving the validation logs of ``validation_data`` (arrays, a PyDataset or an iterable)."""
        if is_stream(validation_data):
            source = make_source(validation_data, None, None, self._stream_check("evaluate"),
                                 owner=owner, arg="validation_data")
            return lambda callbacks=None: self._evaluate_source(source, steps, callbacks)
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError(f"{owner}: 'validation_data' must be a tuple (x_val, y_val) or (x_val, y_val, "
                             f"sample_weight_val), a PyDataset or a generator.")
        try:
            xv, yv = self._prepare_xy(validation_data[0], validation_data[1], "fit")
            wv = None if len(validation_data) == 2 or validation_data[2] is None else \
                self.loss.check_sample_weight(validation_data[2], len(xv), owner)
        except (ValueError, TypeError) as exc:
            cls = type(exc) if type(exc) in (ValueError, TypeError) else ValueError
            raise cls(f"{owner}: 'validation_data' is not valid: {exc}") from exc
        return lambda callbacks=None: self._evaluate_arrays(xv, yv, batch_size, wv, callbacks)

    def _evaluate_source(self, source, steps: int | None = None, callbacks=None) -> dict:
        """Loss and metrics over the batches of a stream source (at most ``steps``)."""
        batches = source.passes(0)
        if steps is not None:
            batches = (b for _, b in zip(range(steps), batches))
        return self._evaluate_batches(batches, callbacks)

    def _evaluate_batches(self, batches, callbacks=None) -> dict:
        """Loss (with penalties) and metrics over ``(x, y, w)`` batches, as Keras weighs them.

        The loss is the mean of the batches' losses weighted by their sizes
        (with sample weights, each batch's is ``sum_i w_i l_i / n``); each
        metric is its weighted mean over all samples. ``callbacks`` get the
        test-batch hooks with the running values.
        """
        loss = self.loss
        metrics = [copy.copy(m) for m in self.metrics]
        for m in metrics:
            m.reset_state()
        total, seen = 0.0, 0
        logs: dict = {}
        self.stop_evaluating = False  # Keras: a callback may set it to end the loop after its batch
        for i, (xb, yb, wb) in enumerate(batches):
            if callbacks is not None:
                callbacks.on_test_batch_begin(i)
            out = self._forward(xb, False)
            if wb is not None or not loss._plain:
                value = loss.weighted_value(yb, out, wb)
            else:
                value = loss.value_from_logits(yb, out) if loss.from_logits else loss.value(yb, out)
            # Keras: each batch's loss with the penalties of that batch (an activity penalty is the batch's own)
            total += (value + self._regularization_loss()) * len(xb)
            seen += len(xb)
            for m in metrics:
                m.update_state(yb, out, metric_weight(m, wb))
            if callbacks is not None:
                logs = {"loss": total / seen, **{m.name: m.result() for m in metrics}}
                callbacks.on_test_batch_end(i, logs)
                if self.stop_evaluating:
                    break
        if seen == 0:
            raise ValueError(f"{type(self).__name__}: the evaluation data gave no batch.")
        res = {"loss": total / seen}
        res.update({m.name: m.result() for m in metrics})
        return res

    def _has_activity_penalty(self) -> bool:
        """True if a layer's penalty depends on the batch it saw (ActivityRegularization)."""
        from ..layers.activity_regularization import ActivityRegularization

        return any(isinstance(layer, ActivityRegularization) for layer, _ in self._program()[0])

    @staticmethod
    def _check_callbacks(callbacks, owner: str) -> list:
        if callbacks is None:
            return []
        if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"{owner}: 'callbacks' must be a list of Callback instances, got {callbacks!r}.")
        for c in callbacks:
            if not isinstance(c, Callback):
                raise TypeError(f"{owner}: 'callbacks' must hold Callback instances, got {c!r}.")
        return list(callbacks)

    @_distributed
    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict: bool = False):
        """One optimizer step on ``(x, y)``; returns the loss (and metrics on this batch)."""
        who = "train_on_batch"
        owner = f"{type(self).__name__}.{who}"
        self._require_compiled(who)
        _check_bool(return_dict, "return_dict", owner)
        if class_weight is not None:
            validate_params(owner, {"class_weight": [dict]}, {"class_weight": class_weight})
            class_weight = _check_class_weight(class_weight, owner)
        # the step is a transaction of its own (see _train_step); the build and the binding are this one's
        with self._setup_guard():
            x, y = self._prepare_xy(x, y, who)
            w = None if sample_weight is None and class_weight is None else \
                self._sample_weights(y, sample_weight, class_weight, owner, len(x))
            self._prepare_training()
            if self._dist is not None:  # the global batch, split over the ranks
                res = self._dist.train_on_batch(self, x, y, w)
                return res if return_dict else (res["loss"] if len(res) == 1 else list(res.values()))
            value, out = self._train_step(x, y, w)
        return self._batch_result(value, y, out, return_dict, w)

    def _batch_result(self, value, y, out, return_dict, sample_weight=None):
        res = {"loss": float(value)}
        res.update(self._metric_results(y, out, sample_weight))
        if return_dict:
            return res
        return res["loss"] if len(res) == 1 else list(res.values())

    def _metric_results(self, y, out, sample_weight=None) -> dict:
        """Each metric on ``(y, out)``, accumulated in a copy: a call's metric state is its own.

        Two threads evaluating one model, or an ``evaluate`` during another
        thread's ``fit``, never see each other's running sums.
        """
        res = {}
        for m in self.metrics:
            m = copy.copy(m)
            m.reset_state()
            m.update_state(y, out, metric_weight(m, sample_weight))
            res[m.name] = m.result()
        return res

    # ------------------------------------------------------------ inference
    def _predict_arrays(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        if self._dist is not None:  # each rank its part, gathered in order
            return self._dist.predict_arrays(self, x, batch_size)
        return self._predict_local(x, batch_size)

    def _predict_local(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        outs = [self._forward(x[i : i + batch_size], False) for i in range(0, len(x), batch_size)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def _predict_batches(self, batches, callbacks, owner: str) -> np.ndarray:
        """Outputs of each batch, with the predict-batch hooks (Keras's ``{"outputs": ...}`` logs)."""
        outs = []
        self.stop_predicting = False  # Keras: a callback may set it to end the loop after its batch
        for i, xb in enumerate(batches):
            callbacks.on_predict_batch_begin(i)
            outs.append(self._forward(xb, False))
            callbacks.on_predict_batch_end(i, {"outputs": outs[-1]})
            if self.stop_predicting:
                break
        if not outs:
            raise ValueError(f"{owner}: 'x' gave no batch.")
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def _evaluate_arrays(self, x, y, batch_size, sample_weight=None, callbacks=None) -> dict:
        if self._dist is not None:  # each rank its part, the sums over all ranks
            return self._dist.evaluate_arrays(self, x, y, batch_size, sample_weight, callbacks)
        if (callbacks is None or not callbacks.callbacks) and not self._has_activity_penalty():
            # one pass over all outputs: the loss of the whole set at once
            out = self._predict_arrays(x, batch_size)
            loss = self.loss
            if sample_weight is not None or not loss._plain:
                value = loss.weighted_value(y, out, sample_weight)
            else:
                value = loss.value_from_logits(y, out) if loss.from_logits else loss.value(y, out)
            res = {"loss": value + self._regularization_loss()}
            res.update(self._metric_results(y, out, sample_weight))
            return res
        w = sample_weight
        batches = ((x[i:i + batch_size], y[i:i + batch_size], None if w is None else w[i:i + batch_size])
                   for i in range(0, len(x), batch_size))
        return self._evaluate_batches(batches, callbacks)

    def _setup_guard(self):
        """:meth:`_all_or_nothing` until the model is built and prepared for training, then nothing (no cost per step)."""
        if self.built and self._trainable_signature is not None:
            return contextlib.nullcontext()
        return self._all_or_nothing()

    def _building(self):
        """:meth:`_all_or_nothing` while the model is not built (an inference call may build it), else nothing."""
        return contextlib.nullcontext() if self.built else self._all_or_nothing()

    @_distributed
    def evaluate(self, x=None, y=None, batch_size: int | None = 32, verbose: Any = "auto", sample_weight=None,
                 steps: int | None = None, callbacks=None, return_dict: bool = False):
        """Loss (with penalties) and metrics on ``(x, y)`` in inference mode (Keras 3's arguments and order).

        ``x`` may be a PyDataset or a generator of ``(x, y)`` /
        ``(x, y, sample_weight)`` batches (then ``steps`` bounds the
        batches read). Safe to call from several threads at once, and
        during another thread's ``fit`` (which then sees its weights change
        between batches): each call keeps its own metric state.
        """
        who = "evaluate"
        owner = f"{type(self).__name__}.{who}"
        self._require_compiled(who)
        batch_size = _check_int(32 if batch_size is None else batch_size, "batch_size", owner, 1)
        validate_params(owner, {"steps": [NoneOk(), *_SIZE]}, {"steps": steps})
        _check_bool(return_dict, "return_dict", owner)
        verbose = resolve_verbose(verbose, owner)
        cb = CallbackList(self._check_callbacks(callbacks, owner), model=self)
        with self._building():
            if is_stream(x):
                source = make_source(x, y, sample_weight, self._stream_check(who), owner=owner)
                cb.on_test_begin()
                res = self._evaluate_source(source, steps, cb)
            else:
                x, y = self._prepare_xy(x, y, who)
                w = None if sample_weight is None else self.loss.check_sample_weight(sample_weight, len(x), owner)
                cb.on_test_begin()
                res = self._evaluate_arrays(x, y, batch_size, w, cb)
            cb.on_test_end(res)
        if verbose and (self._dist is None or self._dist.is_chief):
            print(" - ".join(f"{k}: {v:.4f}" for k, v in res.items()), file=sys.stdout)
        if return_dict:
            return res
        return res["loss"] if len(res) == 1 else list(res.values())

    @_distributed
    def test_on_batch(self, x, y=None, sample_weight=None, return_dict: bool = False):
        """Loss and metrics on one batch in inference mode."""
        who = "test_on_batch"
        owner = f"{type(self).__name__}.{who}"
        self._require_compiled(who)
        _check_bool(return_dict, "return_dict", owner)
        with self._building():
            x, y = self._prepare_xy(x, y, who)
            w = None if sample_weight is None else self.loss.check_sample_weight(sample_weight, len(x), owner)
            res = self._evaluate_arrays(x, y, len(x), w)
        if return_dict:
            return res
        return res["loss"] if len(res) == 1 else list(res.values())

    @_distributed
    def predict(self, x, batch_size: int | None = 32, verbose: Any = "auto", steps: int | None = None,
                callbacks=None) -> np.ndarray:
        """Outputs for ``x`` in inference mode, computed in batches (thread-safe).

        ``x`` may be a PyDataset or a generator of batches ``(x,)``,
        ``(x, y)`` or ``x`` alone (targets are ignored); ``steps`` bounds
        the batches read.
        """
        who = "predict"
        owner = f"{type(self).__name__}.{who}"
        batch_size = _check_int(32 if batch_size is None else batch_size, "batch_size", owner, 1)
        validate_params(owner, {"steps": [NoneOk(), *_SIZE]}, {"steps": steps})
        resolve_verbose(verbose, owner)  # checked; predict shows no progress
        cb = CallbackList(self._check_callbacks(callbacks, owner), model=self)
        with self._building():
            if is_stream(x):
                source = make_source(x, None, None, self._stream_check(who, targets=False), owner=owner)
                cb.on_predict_begin()
                out = self._predict_batches((xb for _, (xb, _, _) in zip(range(steps or 2**62), source.passes(0))),
                                            cb, owner)
            else:
                x = self._inference_input(x, who)
                cb.on_predict_begin()
                if cb.callbacks:
                    out = self._predict_batches((x[i:i + batch_size] for i in range(0, len(x), batch_size)), cb, owner)
                else:
                    out = self._predict_arrays(x, batch_size)
            cb.on_predict_end()
        return out

    def _inference_input(self, x, who: str) -> np.ndarray:
        """``x`` checked (and the model built on it if needed) for an inference call."""
        x = self._check_input(x, who)
        if not self.built:
            self._build_on(x, f"{type(self).__name__}.{who}")
            x = self._check_input(x, who)
        return x

    def predict_on_batch(self, x) -> np.ndarray:
        with self._building():
            return self._forward(self._inference_input(x, "predict_on_batch"), False)

    # --------------------------------------------------------------- weights
    def _weight_targets(self) -> list:
        """``(layer, key, array)`` of every layer's params then buffers, in layer order (a nested model's by its layers)."""
        return [(l, k, a) for l in self.layers for k, a in list(l.params.items()) + list(l.buffers.items())]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every layer's params then buffers, in layer order."""
        return [a.copy() for _, _, a in self._weight_targets()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Inverse of :meth:`get_weights`: every array is set, or none.

        Each array must have its target's shape and hold finite real numbers
        that fit the target's dtype (a float64 value beyond float32's range
        is an error, not a silent ``inf``); all of them are checked and
        converted before the first is written.
        """
        owner = f"{type(self).__name__}.set_weights"
        if not self.built:
            raise ValueError(f"{owner}: model {self.name!r} is not built yet; call build() or fit() first.")
        targets = self._weight_targets()
        if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
            raise TypeError(f"{owner}: 'weights' must be a list of arrays (as get_weights() returns), got "
                            f"{type(weights).__name__}.")
        if len(weights) != len(targets):
            raise ValueError(f"{owner}: 'weights' must hold {len(targets)} arrays, got {len(weights)}.")
        converted = []
        for i, ((layer, key, t), w) in enumerate(zip(targets, weights)):
            label = f"'weights[{i}]' ({layer.name}/{key})"
            w = real_array(w, owner, label)
            if w.shape != t.shape:
                raise ValueError(f"{owner}: {label} must have shape {t.shape}, got {w.shape}.")
            converted.append(_cast_checked(w, t.dtype, owner, f"weights[{i}]") if w.dtype.kind == "f"
                             else w.astype(t.dtype))
            if not all_finite(converted[-1]):
                raise ValueError(f"{owner}: {label} holds NaN or inf values.")
            if key in getattr(layer, "_nonnegative_weights", ()) and (converted[-1] < 0).any():
                raise ValueError(f"{owner}: {label} must be >= 0 (a variance), got {converted[-1].min():g}.")
        for (_, _, t), w in zip(targets, converted):
            np.copyto(t, w)

    def count_params(self) -> int:
        return sum(l.count_params() for l in self.layers)

    def export(self, filepath, format: str = "onnx", **kwargs):
        """Export the model for inference outside Python; Keras 3's method name.

        ``format="onnx"`` (the only format, and the default, where Keras's is
        ``"tf_saved_model"``) calls :func:`normlab.export.to_onnx` with
        ``filepath`` and ``kwargs`` (``opset``, ``input_name``,
        ``output_name``, ``fold_batchnorm``, ...). Needs the ``onnx`` extra.
        Returns the ONNX ``ModelProto``.
        """
        if format != "onnx":
            raise ValueError(f"{type(self).__name__}.export: the 'format' argument must be 'onnx' "
                             f"(normlab exports ONNX only), got {format!r}.")
        from ..export import to_onnx

        return to_onnx(self, filepath, **kwargs)

    def save(self, path) -> None:
        """Write architecture, weights, buffers and optimizer state to one file.

        A path ending in ``.keras`` is written in Keras 3's format
        (:func:`normlab.models.keras_format.save_keras`, needs ``h5py``),
        which Keras loads; any other in normlab's own
        (:func:`normlab.models.saving.save_model`). Read either back with
        :func:`normlab.load_model`.
        """
        from .keras_format import is_keras_path, save_keras

        if is_keras_path(path):
            save_keras(self, path)
            return
        from .saving import save_model

        save_model(self, path)

    def save_weights(self, filepath, overwrite: bool = True) -> None:
        """Write the weights alone: Keras's ``.weights.h5`` layout for that suffix, normlab's ``.npz`` otherwise.

        See :func:`normlab.models.keras_format.save_weights`.
        """
        from .keras_format import save_weights

        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath) -> None:
        """Read weights written by :meth:`save_weights` or Keras's ``save_weights`` (all or nothing)."""
        from .keras_format import load_weights

        load_weights(self, filepath)

    def __reduce__(self):
        """Pickle (joblib, multiprocessing, ``copy.deepcopy``) through normlab's own model file, never the objects."""
        from .keras_format import _reduce_model

        return _reduce_model(self)

    def summary(self, line_length: int | None = None, positions=None, print_fn=None) -> None:
        """Print the model's layers, output shapes and parameter counts in Keras 3's layout.

        See :func:`normlab.models.summary.print_summary`.
        """
        from .summary import print_summary

        print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn)

    def _optimizer_param_count(self) -> int:
        from .summary import optimizer_param_count

        return optimizer_param_count(self)
