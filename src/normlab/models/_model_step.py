"""The training step: one transaction from the forward pass to the optimizer's commit.

:meth:`StepMixin._train_step` runs :meth:`_gradients` (forward, loss with
penalties and backward in :meth:`_backprop`, then the penalties' gradients)
and :meth:`_apply_optimizer`. If anything raises before the optimizer
commits, the layers give back what the step changed and the model is bit
for bit as it was. :meth:`compute_gradients` and :meth:`compute_loss_value`,
the gradient-check hooks, run the first half and keep nothing.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import NonFiniteError
from ..kernels import _backend, _threads
from ..kernels import optim as K_optim
from .executor import next_stamp

__all__ = ["StepMixin"]

_INTP = np.dtype(np.intp)  # (a dtype compared with a type converts the type: 0.3 us, every step)


class StepMixin:
    """:class:`~normlab.models.base.BaseModel`'s training step and the gradient-check hooks."""

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

    def _regularization_loss(self, layers=None) -> float:
        layers = self._regularized_layers() if layers is None else layers
        return sum(layer.regularization_loss() for layer in layers)

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
