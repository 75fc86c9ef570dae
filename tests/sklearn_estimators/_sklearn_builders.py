"""Module-level model functions for the KerasStyle wrappers (picklable for GridSearchCV(n_jobs=2))."""

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
