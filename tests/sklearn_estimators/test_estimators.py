"""normlab.sklearn beyond scikit-learn's checks: the contract of issue 24 (pipelines, pickling, dtype, seeds, ...)."""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_iris, make_multilabel_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import normlab  # noqa: E402
from normlab import layers, optimizers  # noqa: E402
from normlab.models import Sequential  # noqa: E402
from normlab.sklearn import KerasStyleClassifier, KerasStyleRegressor, MLPClassifier, MLPRegressor  # noqa: E402

from _sklearn_builders import mlp  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def small(cls=MLPClassifier, **kw):
    return cls(**{"hidden_layer_sizes": (16,), "max_iter": 15, "learning_rate_init": 0.01, "random_state": 0, **kw})


# ---------------------------------------------------------------- contract of the signature
def test_defaults_are_scikit_learns_where_they_mean_the_same():
    from sklearn.neural_network import MLPClassifier as SK

    ours, theirs = MLPClassifier().get_params(), SK().get_params()
    shared = ["hidden_layer_sizes", "activation", "alpha", "batch_size", "learning_rate_init", "max_iter", "shuffle",
              "random_state", "tol", "verbose", "warm_start", "early_stopping", "validation_fraction",
              "n_iter_no_change"]
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    assert (ours["batch_norm"], ours["dropout"], ours["optimizer"], ours["clipnorm"], ours["lr_schedule"],
            ours["dtype"]) == (True, 0.0, "adam", None, None, "float32")


def test_invalid_parameters_are_rejected_in_fit_with_scikit_learns_message(iris):
    X, y = iris
    est = MLPClassifier(alpha=-1.0)  # construction stores, never raises
    with pytest.raises(ValueError, match=r"The 'alpha' parameter of MLPClassifier must be a float in the range "
                                         r"\[0.0, inf\)\. Got -1\.0 instead\."):
        est.fit(X, y)
    for bad in [dict(optimizer="adamx"), dict(dropout=1.0), dict(dtype="float16"), dict(batch_size=0),
                dict(hidden_layer_sizes=(0,)), dict(clipnorm=0.0)]:
        with pytest.raises(ValueError, match="parameter of MLPClassifier"):
            small(**bad).fit(X, y)
    assert not hasattr(est, "model_")


# ---------------------------------------------------------------- data, dtype, labels
def test_float64_pandas_input_keeps_a_float32_network_and_names_features(iris):
    pd = pytest.importorskip("pandas")
    X, y = iris
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(4)])
    est = small().fit(df, pd.Series(y))
    assert est.model_.dtype == np.float32
    assert all(layer.dtype == np.float32 for layer in est.model_.layers)
    assert list(est.feature_names_in_) == ["f0", "f1", "f2", "f3"]
    assert est.predict_proba(df).dtype == np.float32
    assert small(dtype="float64").fit(X, y).model_.dtype == np.float64


def test_string_binary_multiclass_and_multilabel_targets(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    est = small(max_iter=40).fit(X, names)
    assert list(est.classes_) == ["setosa", "versicolor", "virginica"]
    assert est.score(X, names) > 0.9 and est.predict(X).dtype == names.dtype
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(est.classes_[proba.argmax(1)], est.predict(X))

    Xb, yb = load_breast_cancer(return_X_y=True)
    Xb = StandardScaler().fit_transform(Xb)
    b = small().fit(Xb, yb == 1)
    assert b.n_outputs_ == 2 and b.model_.layers[-1].units == 2 and list(b.classes_) == [False, True]
    assert b.predict_proba(Xb).shape == (len(Xb), 2) and b.score(Xb, yb == 1) > 0.9

    Xm, Ym = make_multilabel_classification(200, 10, n_classes=4, random_state=0)
    m = small(max_iter=40).fit(Xm, Ym)
    assert m.predict(Xm).shape == Ym.shape and list(m.classes_) == [0, 1, 2, 3]
    assert m.score(Xm, Ym) > 0.4  # subset accuracy


def test_unseen_label_and_single_class_are_errors(iris):
    X, y = iris
    est = small().fit(X, y)
    with pytest.raises(ValueError, match="not in classes_"):
        est.set_params(warm_start=True).fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match="one class"):
        small().fit(X, np.zeros(len(X)))
    with pytest.raises(NotFittedError):
        small().predict(X)


# ---------------------------------------------------------------- seeds and state
def test_same_random_state_gives_bit_identical_fits_and_none_does_not(iris):
    X, y = iris
    a, b = small(dropout=0.2).fit(X, y), small(dropout=0.2).fit(X, y)
    assert a.loss_curve_ == b.loss_curve_
    for wa, wb in zip(a.model_.get_weights(), b.model_.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    c = small(random_state=None).fit(X, y)
    d = small(random_state=None).fit(X, y)
    assert c.loss_curve_ != d.loss_curve_


def test_pickle_and_clone(iris, tmp_path):
    X, y = iris
    est = small().fit(X, y)
    blob = pickle.dumps(est)
    # the network travels as normlab's model file (JSON + npz), not as pickled layer objects
    assert b"normlab.layers" not in blob and b"Dense" not in blob.split(b"PK")[0]
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    # partial_fit goes on identically from the restored optimizer state
    np.testing.assert_array_equal(back.partial_fit(X, y).predict_proba(X), est.partial_fit(X, y).predict_proba(X))
    fresh = clone(est)
    assert fresh.get_params() == est.get_params() and not hasattr(fresh, "model_")


def test_optimizer_object_and_schedule_are_copied_not_mutated(iris):
    X, y = iris
    opt = optimizers.SGD(learning_rate=0.05, momentum=0.9)
    sched = optimizers.schedules.ExponentialDecay(0.05, decay_steps=10, decay_rate=0.5)
    est = small(optimizer=opt, clipnorm=1.0).fit(X, y)
    assert opt.iterations == 0 and est.model_.optimizer is not opt
    assert type(est.model_.optimizer).__name__ == "SGD" and est.model_.optimizer.clipnorm == 1.0
    est2 = small(lr_schedule=sched).fit(X, y)
    assert est2.model_.optimizer.learning_rate is not sched
    assert est2.model_.optimizer.current_learning_rate < 0.05


def test_warm_start_and_partial_fit_continue(iris):
    X, y = iris
    est = small(warm_start=True).fit(X, y)
    first = est.model_
    est.fit(X, y)
    assert est.model_ is first and est.n_iter_ == 30 and len(est.loss_curve_) == 30
    pf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        pf.partial_fit(X, y)
    for _ in range(3):
        pf.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    assert pf.n_iter_ == 3 and list(pf.classes_) == [0, 1, 2] and pf.t_ == 300
    with pytest.raises(ValueError, match="features"):
        pf.partial_fit(X[:, :3], y)


def test_stopping_rule_and_early_stopping(iris):
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = small(max_iter=500, tol=0.5, n_iter_no_change=2).fit(X, y)  # stops: improvement never reaches tol
    # scikit-learn's count: the first epoch improves on inf, then n_iter_no_change + 1 epochs that do not
    assert est.n_iter_ == 2 + 2 and est.best_loss_ == min(est.loss_curve_) and est.validation_scores_ is None
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        small(max_iter=2, tol=0).fit(X, y)
    es = small(max_iter=60, early_stopping=True, validation_fraction=0.2, n_iter_no_change=5).fit(X, y)
    assert len(es.validation_scores_) == es.n_iter_ and es.best_loss_ is None
    assert es.best_validation_score_ == max(es.validation_scores_)


def test_sample_weight_ones_change_nothing_and_weights_matter(iris):
    X, y = iris
    a = small().fit(X, y)
    b = small().fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = small().fit(X, y, sample_weight=np.where(y == 0, 5.0, 1.0))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
    # only the scale changes: weights are rescaled to mean 1
    d = small().fit(X, y, sample_weight=np.where(y == 0, 50.0, 10.0))
    np.testing.assert_allclose(c.predict_proba(X), d.predict_proba(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="sample_weight"):
        small().fit(X, y, sample_weight=-np.ones(len(y)))


def test_short_fits_get_exact_batchnorm_statistics_long_ones_keep_moving_averages(iris):
    X, y = iris
    short = small(max_iter=5, batch_size=150).fit(X, y)  # 5 steps
    dense, bn = short.model_.layers[0], short.model_.layers[1]
    h = dense(X.astype(np.float32)).astype(np.float64)
    np.testing.assert_allclose(bn.buffers["moving_mean"], h.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.buffers["moving_variance"], h.var(axis=0, ddof=1), rtol=1e-5)
    long = small(max_iter=25, batch_size=30).fit(X, y)  # 125 steps
    dense, bn = long.model_.layers[0], long.model_.layers[1]
    h = dense(X.astype(np.float32)).astype(np.float64)
    assert not np.allclose(bn.buffers["moving_mean"], h.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_regressor_multioutput_and_one_column(iris):
    X, Y = make_regression(200, 5, n_targets=2, random_state=0)
    Y = StandardScaler().fit_transform(Y)
    r = small(MLPRegressor, max_iter=60).fit(X, Y)
    assert r.predict(X).shape == (200, 2) and r.score(X, Y) > 0.8
    from sklearn.exceptions import DataConversionWarning

    with pytest.warns(DataConversionWarning, match="column-vector"):
        assert small(MLPRegressor).fit(X, Y[:, :1]).predict(X).shape == (200,)


# ---------------------------------------------------------------- scikit-learn's tools
def test_pipeline_cross_val_score_and_grid_search_n_jobs_2():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), small())
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.9
    assert pipe.fit(X, y).predict(X[:3]).dtype == y.dtype  # labels, not probabilities
    # two worker processes (loky): the estimators travel pickled, the fitted network as normlab's model file
    grid = GridSearchCV(pipe, {"mlpclassifier__batch_norm": [True, False]}, cv=2, n_jobs=2).fit(X, y)
    assert grid.best_score_ > 0.9 and hasattr(grid.best_estimator_[-1], "model_")


# ---------------------------------------------------------------- the Keras-style wrappers
def test_keras_style_routes_model_arguments_and_grid_searches(iris):
    X, y = iris
    est = KerasStyleClassifier(mlp, epochs=20, learning_rate_init=0.01, random_state=0, model__units=8)
    assert est.get_params()["model__units"] == 8
    est.fit(X, y)
    assert est.model_.layers[0].units == 8 and est.score(X, y) > 0.8
    assert est.set_params(model__units=4).get_params()["model__units"] == 4
    grid = GridSearchCV(est, {"model__units": [4, 8]}, cv=2).fit(X, y)
    assert grid.best_params_["model__units"] in (4, 8)
    back = pickle.loads(pickle.dumps(est.fit(X, y)))
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


def _compiled_onehot():
    model = Sequential([layers.Dense(8, activation="relu"), layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(0.01), loss="categorical_crossentropy")
    return model


def _one_sigmoid():
    return Sequential([layers.Dense(8, activation="relu"), layers.Dense(1, activation="sigmoid")])


def test_keras_style_trains_a_compiled_model_as_compiled(iris):
    X, y = iris
    est = KerasStyleClassifier(_compiled_onehot, epochs=20, random_state=0).fit(X, y)
    assert type(est.model_.loss).__name__ == "CategoricalCrossentropy" and est.score(X, y) > 0.8
    with pytest.raises(ValueError, match="outputs"):
        KerasStyleClassifier(_compiled_onehot, random_state=0).fit(X[:, :2], np.arange(len(X)) % 4)
    # one sigmoid unit for a binary target: binary cross-entropy, two-column predict_proba
    one = KerasStyleClassifier(_one_sigmoid, epochs=20, learning_rate_init=0.01, random_state=0).fit(X, y == 0)
    assert type(one.model_.loss).__name__ == "BinaryCrossentropy" and one.predict_proba(X).shape == (len(X), 2)
    assert one.score(X, y == 0) > 0.9
    with pytest.raises(ValueError, match="'model' must be a function"):
        KerasStyleClassifier().fit(X, y)
    with pytest.raises(TypeError, match="model__"):
        KerasStyleClassifier(mlp, units=3)


def test_keras_style_regressor_with_callbacks():
    X, y = make_regression(200, 5, random_state=0)
    y = (y - y.mean()) / y.std()
    stop = normlab.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=10.0)
    est = KerasStyleRegressor(mlp, epochs=50, callbacks=[stop], random_state=0).fit(X, y)
    assert est.n_iter_ < 50 and stop.model is None  # the callback is copied at every fit
