"""scikit-learn's own estimator checks, in full, on every estimator of normlab.sklearn."""

import pytest

pytest.importorskip("sklearn", minversion="1.6")  # expected_failed_checks, __sklearn_tags__

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from normlab.sklearn import KerasStyleClassifier, KerasStyleRegressor, MLPClassifier, MLPRegressor  # noqa: E402

from _sklearn_builders import mlp_named as mlp  # noqa: E402  (a stable repr: the same test ids in every process)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# small networks, few epochs and a larger step keep the ~60 checks per estimator fast (the checks' data
# sets give "auto" batches of 200 samples: one or two steps an epoch); the defaults stay the contract's
ESTIMATORS = [
    MLPClassifier(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=0.01),
    MLPRegressor(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.01),
    KerasStyleClassifier(mlp, epochs=20, model__units=16),
    KerasStyleRegressor(mlp, epochs=40, model__units=16),
]


def _expected_failed_checks(estimator):
    return estimator._xfail_checks()


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)
