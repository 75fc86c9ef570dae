"""All or nothing in fit / train_on_batch / set_weights, checks after casting, threads, TerminateOnNaN.

Issue 21 ("no bad input, file, interrupt or thread leaves a wrong or
half-changed model"): the model-level parts.
"""

import sys
import threading

import numpy as np
import pytest

import normlab
from normlab import layers as L
from normlab import optimizers
from normlab.callbacks import Callback, TerminateOnNaN
from normlab.testing import check_layer_gradients


def mlp(units=3, seed=None):
    model = normlab.Sequential([
        L.Dense(8), L.BatchNormalization(), L.Activation("relu"), L.Dropout(0.2, seed=seed),
        L.Dense(units, activation="softmax"),
    ])
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def data(n=40, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, k, n)


def state(model):
    """Every array a model holds, its optimizer's state and counters, its RNG states: for bit-for-bit comparison."""
    out = [("built", model.built), ("input_shape", model.input_shape)]
    for layer in model.layers:
        out.append((layer.name + ".built", layer.built))
        out += [(f"{layer.name}/{k}", v.tobytes()) for k, v in {**layer.params, **layer.buffers}.items()]
        if hasattr(layer, "get_rng_state"):
            out.append((layer.name + ".rng", repr(layer.get_rng_state())))
    opt = model.optimizer
    if opt is not None and opt._binding is not None:
        out += [(f"opt/{k}", np.asarray(v).tobytes()) for k, v in opt.get_state().items()]
        out += [("iterations", opt.iterations), ("skipped", opt.skipped_steps)]
    return out


# ------------------------------------------------------------------ unbuilt stays unbuilt
BAD_FIT = {
    "labels out of range": lambda x, y: dict(x=x, y=y + 10),
    "NaN labels": lambda x, y: dict(x=x, y=np.where(np.arange(len(y)) == 3, np.nan, y)),
    "length mismatch": lambda x, y: dict(x=x, y=y[:-1]),
    "bad validation_data": lambda x, y: dict(x=x, y=y, validation_data=(x[:, :2], y)),
    "validation labels": lambda x, y: dict(x=x, y=y, validation_data=(x, y + 5)),
    "float64 beyond float32 in validation": lambda x, y: dict(
        x=x, y=y, validation_data=(np.full((4, x.shape[1]), 1e300), y[:4])),
    "callback failing in on_train_begin": lambda x, y: dict(x=x, y=y, callbacks=[_Failing()]),
}


class _Failing(Callback):
    def on_train_begin(self, logs=None):
        raise ValueError("_Failing: refused")


@pytest.mark.parametrize("case", sorted(BAD_FIT))
def test_a_failed_fit_leaves_an_unbuilt_model_unbuilt(case, kernel_path):
    x, y = data()
    fresh = mlp(seed=3)
    reference = mlp(seed=3)
    with pytest.raises(ValueError), np.errstate(all="ignore"):
        fresh.fit(**BAD_FIT[case](x, y), epochs=1, verbose=0, seed=0)
    assert not fresh.built and all(not layer.built for layer in fresh.layers)
    assert fresh.optimizer._binding is None
    # and it trains as a fresh model does, bit for bit
    h1 = fresh.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0)
    h2 = reference.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0)
    assert h1.history["loss"] == h2.history["loss"]
    for a, b in zip(fresh.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_wrong_width_x_does_not_fix_the_input_shape():
    x, y = data(d=5)
    model = mlp()
    with pytest.raises(ValueError, match="labels must be in"):
        model.fit(np.ones((40, 7), np.float32), y + 7, verbose=0)
    model.fit(x, y, verbose=0, epochs=1)
    assert model.input_shape == (None, 5)


@pytest.mark.parametrize("call", ["train_on_batch", "predict", "evaluate", "predict_on_batch"])
def test_failed_calls_do_not_build(call):
    model = normlab.Sequential([L.Dense(4), L.BatchNormalization(), L.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.ones((1, 5), np.float32)
    args = {"train_on_batch": (x, [0]), "predict": (x,), "evaluate": (x, [7]), "predict_on_batch": (x,)}[call]
    if call.startswith("predict"):
        model.layers.insert(1, L.Reshape((5, 2)))  # 4 units cannot be reshaped to (5, 2): fails in the 2nd layer
    with pytest.raises(ValueError):
        getattr(model, call)(*args)
    assert not any(layer.built for layer in model.layers)


def test_a_failed_first_step_leaves_the_model_unbuilt_and_a_good_one_builds_it():
    model = mlp()
    x, y = data()
    with pytest.raises(ValueError, match="needs at least 2 values per feature"):
        model.train_on_batch(x[:1], y[:1])  # batch norm in training needs two samples
    assert not model.built
    model.train_on_batch(x, y)
    assert model.built and model.optimizer.iterations == 1


# ------------------------------------------------------------------ checks after the cast
def test_fit_checks_finiteness_after_casting_to_the_model_dtype(kernel_path):
    x, y = data()
    model = mlp()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    before = state(model)
    big = x.astype(np.float64)
    big[5, 2] = 1e39  # finite in float64, inf in float32
    for call in (lambda: model.fit(big, y, verbose=0), lambda: model.train_on_batch(big, y),
                 lambda: model.evaluate(big, y), lambda: model.predict(big)):
        with pytest.raises(ValueError, match=r"'x' holds finite values beyond the range of float32.*overflow"):
            call()
        assert state(model) == before


def test_float64_targets_beyond_float32_are_refused():
    model = normlab.Sequential([L.Dense(1)])
    model.compile("sgd", "mse")
    x = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="'y' holds finite values beyond the range of float32"):
        model.fit(x, np.array([1.0, 2.0, 1e300, 3.0]), verbose=0)
    assert not model.built


def test_a_huge_sparse_label_is_reported_as_it_is():
    model = mlp()
    x, y = data()
    labels = y.astype(np.float64)
    labels[4] = 1e20
    with pytest.raises(ValueError, match=r"found label 1e\+20"):
        model.fit(x, labels, verbose=0)
    big = y.astype(np.uint64)
    big[2] = np.iinfo(np.uint64).max
    with pytest.raises(ValueError, match=f"found label {np.iinfo(np.uint64).max}"):
        model.fit(x, big, verbose=0)


@pytest.mark.parametrize("arg,value", [
    ("seed", "abc"), ("seed", -1), ("seed", 1.5), ("seed", True),
    ("shuffle", "no"), ("shuffle", 1), ("shuffle", None),
    ("batch_size", 0), ("batch_size", "32"), ("batch_size", True), ("batch_size", 2.0),
    ("epochs", -1), ("epochs", 1.0), ("initial_epoch", -2),
    ("validation_split", 1.0), ("validation_split", "0.1"), ("validation_split", float("nan")),
])
def test_fit_arguments_use_the_standard_message(arg, value):
    model = mlp()
    x, y = data()
    with pytest.raises(normlab.InvalidParameterError,
                       match=rf"The '{arg}' parameter of Sequential.fit must be .* Got {value!r} instead\."):
        model.fit(x, y, verbose=0, **{arg: value})
    assert not model.built


@pytest.mark.parametrize("call", ["evaluate", "test_on_batch", "train_on_batch"])
def test_return_dict_must_be_a_bool(call):
    model = mlp()
    x, y = data()
    with pytest.raises(normlab.InvalidParameterError, match=f"'return_dict' parameter of Sequential.{call}"):
        getattr(model, call)(x, y, return_dict="no")
    assert not model.built


def test_callbacks_must_be_a_list_of_callbacks():
    model = mlp()
    x, y = data()
    with pytest.raises(TypeError, match="Sequential.fit: 'callbacks' must be a list"):
        model.fit(x, y, verbose=0, callbacks=TerminateOnNaN())
    with pytest.raises(TypeError, match="'callbacks' must hold Callback instances"):
        model.fit(x, y, verbose=0, callbacks=[print])
    assert not model.built


# ------------------------------------------------------------------ set_weights: all or nothing
@pytest.mark.parametrize("bad", ["shape", "overflow", "nan", "dtype", "ragged"])
def test_set_weights_sets_every_array_or_none(bad):
    x, y = data()
    model = mlp()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    before = state(model)
    weights = [w + 1 for w in model.get_weights()]
    last = weights[-1]
    weights[-1] = {
        "shape": np.ones(last.size + 1),
        "overflow": np.full(last.shape, 1e40),
        "nan": np.full(last.shape, np.nan),
        "dtype": np.full(last.shape, "a"),
        "ragged": [[1.0], [1.0, 2.0]],
    }[bad]
    with pytest.raises((ValueError, TypeError), match=r"Sequential.set_weights: 'weights\[%d\]'" % (len(weights) - 1)):
        model.set_weights(weights)
    assert state(model) == before
    with pytest.raises(ValueError, match="'weights' must hold"):
        model.set_weights(weights[:-1])
    assert state(model) == before


# ------------------------------------------------------------------ threads
def cnn():
    model = normlab.Sequential([
        L.Reshape((6, 6, 1)), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(), L.Activation("relu"),
        L.MaxPooling2D(2), L.Flatten(), L.LayerNormalization(), L.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("make,width", [(mlp, 5), (cnn, 36)], ids=["mlp", "cnn"])
def test_concurrent_evaluate_and_predict_calls_each_get_their_own_results(make, width, kernel_path):
    x, y = data(n=200, d=width, seed=1)
    model = make()
    model.fit(x, y, epochs=2, verbose=0, seed=0)
    parts = [(x[i::4], y[i::4]) for i in range(4)]
    expected = [model.evaluate(a, b, batch_size=7) for a, b in parts]
    predicted = [model.predict(a, batch_size=9) for a, _ in parts]
    errors = []

    def worker(i):
        for _ in range(40):
            got = model.evaluate(*parts[i], batch_size=7)
            if got != expected[i]:
                errors.append((i, got, expected[i]))
            if not np.array_equal(model.predict(parts[i][0], batch_size=9), predicted[i]):
                errors.append((i, "predict"))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []


def test_evaluate_during_fit_does_not_change_what_fit_reports():
    x, y = data(n=160, seed=2)
    xv, yv = data(n=50, seed=3)
    reference = mlp(seed=1)
    h_ref = reference.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=0, validation_data=(xv, yv))

    model = mlp(seed=1)
    stop = threading.Event()

    def evaluator():
        while not stop.is_set():
            if model.built and model.compiled:
                model.evaluate(xv, yv, batch_size=5)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=evaluator)
    thread.start()
    try:
        h = model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=0, validation_data=(xv, yv))
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)
    assert h.history == h_ref.history


# ------------------------------------------------------------------ TerminateOnNaN with on_nonfinite
def diverging(on_nonfinite):
    model = normlab.Sequential([L.Dense(16), L.BatchNormalization(), L.Activation("relu"),
                                L.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(1e18, on_nonfinite=on_nonfinite), loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip", "proceed"])
def test_terminate_on_nan_stops_cleanly_whatever_on_nonfinite_says(on_nonfinite, kernel_path, capsys):
    x, y = data(n=256, d=8)
    with np.errstate(all="ignore"):
        model = diverging(on_nonfinite)
        history = model.fit(x, y, epochs=3, batch_size=32, verbose=0, seed=0, callbacks=[TerminateOnNaN()])
    assert "invalid loss" in capsys.readouterr().err
    assert len(history.history["loss"]) == 1 and np.isnan(history.history["loss"][0])
    results = (model.optimizer.iterations, model.optimizer.skipped_steps)
    # the third step's activations overflow in batch norm, which refuses the step (NonFiniteError) before the
    # optimizer sees it: "raise" and "proceed" (nothing to apply) end training cleanly with the step undone,
    # "skip" counts it as skipped; the weights and moving statistics stay finite
    assert results == ((2, 1) if on_nonfinite == "skip" else (2, 0))
    for w in model.get_weights():
        assert np.isfinite(w).all()


def test_without_terminate_on_nan_the_default_still_raises(kernel_path):
    x, y = data(n=256, d=8)
    model = diverging("raise")
    with pytest.raises(normlab.NonFiniteError, match="NaN or inf|overflow"), np.errstate(all="ignore"):
        model.fit(x, y, epochs=3, batch_size=32, verbose=0, seed=0)
    assert model.optimizer.iterations == 2


def test_a_skipped_step_leaves_the_moving_statistics_and_generators_alone(kernel_path):
    x, y = data()
    model = mlp(seed=5)
    model.compile(optimizer=optimizers.SGD(0.1, on_nonfinite="skip"), loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, y)
    before = state(model)
    model.layers[-1].params["bias"][0] = np.nan
    nan_before = state(model)
    with np.errstate(all="ignore"):
        model.train_on_batch(x, y)
    assert model.optimizer.skipped_steps == 1
    after = state(model)
    changed = [k for (k, a), (_, b) in zip(nan_before, after) if a != b]
    assert changed == ["opt/skipped_steps", "skipped"], changed
    assert len(before) == len(after)


# ------------------------------------------------------------------ gradient checks of noisy layers
@pytest.mark.parametrize("make", [
    lambda: L.Dropout(0.4, seed=2), lambda: L.GaussianNoise(0.5, seed=2), lambda: L.GaussianDropout(0.3, seed=2),
    lambda: L.NoisyDense(3, seed=2), lambda: L.Dropout(0.4),
])
def test_check_layer_gradients_fixes_the_noise_of_random_layers(make):
    layer = make()
    x = np.random.default_rng(0).standard_normal((6, 4))
    errors = check_layer_gradients(layer, x)
    assert max(errors.values()) < 1e-7, errors
    rng_state = layer.get_rng_state()
    check_layer_gradients(layer, x)
    assert layer.get_rng_state() == rng_state  # the check gives the generator back


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip", "proceed"])
def test_terminate_on_nan_with_nan_from_the_optimizer_side(on_nonfinite, kernel_path, capsys):
    # no batch norm: the NaN first shows in the loss and the gradients, where on_nonfinite decides
    model = normlab.Sequential([L.Dense(16, activation="relu"), L.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(0.1, on_nonfinite=on_nonfinite), loss="sparse_categorical_crossentropy")
    x, y = data(n=64, d=8)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0)
    model.layers[-1].params["bias"][0] = np.nan
    with np.errstate(all="ignore"):
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=0, callbacks=[TerminateOnNaN()])
    assert "invalid loss" in capsys.readouterr().err
    assert len(history.history["loss"]) == 1 and np.isnan(history.history["loss"][0])
    expected = {"raise": (4, 0), "skip": (4, 1), "proceed": (5, 0)}[on_nonfinite]
    assert (model.optimizer.iterations, model.optimizer.skipped_steps) == expected
