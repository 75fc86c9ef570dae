"""BatchNormalization's moving statistics: their update from a batch, all or nothing, and the undo of a failed step.

:class:`_MovingStatistics` is one of the base classes of
:class:`normlab.layers.BatchNormalization` (methods only; the state is the
layer's). It holds the NumPy path's update of the moving statistics from a
batch's (:meth:`_MovingStatistics._commit_moving`, every new value formed and
checked before any is written; the fused row kernels do the same inside their
one call), the errors raised when a batch cannot update them (too few values
per feature, NaN or inf input, overflow), and the undo record that lets a
model's training step give back what a failed step changed
(:meth:`_MovingStatistics._begin_step`, :meth:`_MovingStatistics._rollback`;
see :meth:`normlab.layers.Layer._begin_step`).
"""

from __future__ import annotations

import numpy as np

from ..errors import NonFiniteError
from ..kernels import batchnorm as K
from ..kernels.checks import all_finite


class _MovingStatistics:
    """The moving statistics of :class:`~normlab.layers.BatchNormalization`: update, errors, undo."""

    def _begin_step(self, stamp):
        self._stamp = stamp

    def _rollback(self, stamp):
        saved, mm, mv = self._saved, self.buffers.get("moving_mean"), self.buffers.get("moving_variance")
        if saved is not None and saved[-1] == stamp:
            c = mm.size
            # float64 copies of the old values: exact
            np.copyto(mm, saved[:c].reshape(mm.shape), casting="unsafe")
            np.copyto(mv, saved[c : 2 * c].reshape(mv.shape), casting="unsafe")
        if self._np_saved is not None and self._np_saved[0] == stamp:
            for key, value in self._np_saved[1].items():
                np.copyto(self.buffers[key], value)

    def _raise_too_few(self, shape, count):
        raise ValueError(
            f"Layer {self.name!r} (BatchNormalization): training mode needs at least 2 "
            f"values per feature to estimate a variance, got an input of shape "
            f"{tuple(shape)} ({count} per feature). Use a larger batch, or call the "
            f"layer with training=False to use the moving statistics."
        )

    def _commit_moving(self, x, mean, var, count, *, renorm=False, groups=False):
        """Update the moving statistics from the batch's, all of them or none.

        Every new value is formed (in float64 where the batch variance is)
        and checked to fit its buffer's dtype before any buffer is written;
        otherwise the error says why: NaN or inf input, or finite input
        whose statistics overflow. ``groups``: ghost batches, whose
        statistics are averaged.
        """
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            self._raise_bad_statistics(x, overflow=all_finite(x))
        if groups:
            mean, var = mean.mean(axis=0), var.mean(axis=0)
        b = self.buffers
        var_m = var * self._var_correction(count)
        batch = {"moving_mean": mean, "moving_variance": var_m}
        momentum = {"moving_mean": self.momentum, "moving_variance": self.momentum}
        if renorm:
            # Keras 3: the moving standard deviation is averaged; the variance follows from it
            del batch["moving_variance"]
            batch.update(moving_stddev=np.sqrt(var_m + self.epsilon), renorm_mean=mean,
                         renorm_stddev=np.sqrt(var + self.epsilon))
            momentum.update(moving_stddev=self.momentum, renorm_mean=self.renorm_momentum,
                            renorm_stddev=self.renorm_momentum)
        new = {}
        with np.errstate(over="ignore"):
            for key, value in batch.items():
                buf = b[key]
                new[key] = K.update_moving(buf, value.reshape(buf.shape), momentum[key])
            if renorm:
                new["moving_variance"] = K.variance_from_stddev(new["moving_stddev"], self.epsilon)
            for key, value in new.items():
                new[key] = value.astype(b[key].dtype)
                if not np.isfinite(new[key]).all():
                    self._raise_bad_statistics(x, overflow=True)
        for key, value in new.items():
            np.copyto(b[key], value)

    def _raise_bad_statistics(self, x, overflow: bool):
        # NonFiniteError (a ValueError): a model's step handles it by the optimizer's on_nonfinite
        if not overflow:
            raise NonFiniteError(
                f"Layer {self.name!r} (BatchNormalization): the input of shape "
                f"{tuple(x.shape)} holds NaN or inf values; the moving statistics were left "
                f"unchanged."
            )
        dtype = self.buffers["moving_variance"].dtype
        big = float(np.finfo(dtype).max)
        raise NonFiniteError(
            f"Layer {self.name!r} (BatchNormalization): the statistics of the finite input of shape "
            f"{tuple(x.shape)} overflow: its batch variance, or an updated moving statistic, exceeds "
            f"the largest {dtype} ({big:.3g}; deviations from the mean beyond about "
            f"{np.sqrt(big):.2g}); the moving statistics were left unchanged. Scale the input down "
            f"or use float64."
        )

    def _var_correction(self, count: int) -> float:
        return count / (count - 1) if self.unbiased_moving_variance and count > 1 else 1.0
