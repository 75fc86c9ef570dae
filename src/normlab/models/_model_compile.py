"""``compile``, and the training plan made from it on the first training step.

:meth:`CompileMixin.compile` resolves the optimizer, the loss and the
metrics (a failed lookup is worded as the parameter template:
:func:`_compile_lookup`). :meth:`CompileMixin._prepare_training`, run on the
first training step after ``compile``, makes what every step then follows:
the trainable parameters bound to the optimizer (:meth:`_flatten_parameters`),
the executor with its fused layers, the weight penalties
(:meth:`_penalty_plan`), the constrained layers, and whether the output
layer, the loss and its gradient run as one kernel.
"""

from __future__ import annotations

import copy

from .. import losses as _losses
from .. import metrics as _metrics
from .. import regularizers as _regularizers
from .._registry import LookupFailed, argument_error
from ..layers.base import Layer
from ..losses import SparseCategoricalCrossentropy
from .executor import Executor

__all__ = ["CompileMixin"]


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


class CompileMixin:
    """:class:`~normlab.models.base.BaseModel`'s ``compile`` and the training plan."""

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

    def _regularized_layers(self) -> list:
        # most models have no penalty: skip the per-layer calls (a small step pays for each)
        return [layer for layer in self.layers if layer._regularizers]

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
