"""scikit-learn estimators backed by normlab networks (needs scikit-learn; the ``sklearn`` extra).

- :class:`MLPClassifier`, :class:`MLPRegressor`: scikit-learn's MLP
  parameters, plus batch normalization (on by default), dropout, any normlab
  optimizer, gradient clipping and learning-rate schedules.
- :class:`KerasStyleClassifier`, :class:`KerasStyleRegressor`: wrap a
  function that builds any normlab model (the scikeras pattern).

All pass scikit-learn's ``check_estimator``, clone, pickle (the network
travels as normlab's own model file, never pickled objects) and work in
``Pipeline``, ``GridSearchCV`` and ``cross_val_score``. See docs/sklearn.md.
"""

try:
    import sklearn as _sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("normlab.sklearn needs scikit-learn (pip install 'normlab[sklearn]').") from exc

from ._mlp import MLPClassifier, MLPRegressor
from ._wrappers import KerasStyleClassifier, KerasStyleRegressor

__all__ = ["MLPClassifier", "MLPRegressor", "KerasStyleClassifier", "KerasStyleRegressor"]
