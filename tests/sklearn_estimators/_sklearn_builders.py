"""Module-level model functions for the KerasStyle wrappers (picklable for GridSearchCV(n_jobs=2))."""

import functools

from normlab import layers
from normlab.models import Sequential


def mlp(meta, units=32):
    """One BN hidden layer and the head the target needs."""
    return Sequential([
        layers.Dense(units, use_bias=False),
        layers.BatchNormalization(momentum=0.9, batch_of_one="moving_statistics"),
        layers.Activation("relu"),
        layers.Dense(meta["n_outputs_"], activation=meta["out_activation_"]),
    ])


class Named:
    """A builder whose repr is its name, not its address.

    scikit-learn's check ids hold the estimator's repr, so a plain function there gives a
    different test id in every process, and pytest-xdist's workers refuse to run a suite
    whose collections differ. The signature is the wrapped function's (``__wrapped__``).
    """

    def __init__(self, function):
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self):
        return self.__name__


mlp_named = Named(mlp)
