"""fit / evaluate / predict with Keras 3's data: weights, PyDatasets, generators, steps (issue 22, part 2)."""

import numpy as np
import pytest

import normlab
from normlab import layers as L
from normlab import optimizers
from normlab.utils import PyDataset


def data(n=48, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, k, n)


def mlp(bn=True, seed=0, lr=0.1):
    inner = [L.Dense(8), L.BatchNormalization(), L.Activation("relu")] if bn else [L.Dense(8, activation="tanh")]
    model = normlab.Sequential([normlab.Input((5,)), *inner, L.Dense(3, activation="softmax")], seed=seed)
    model.compile(optimizer=optimizers.SGD(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def same_weights(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


class Batches(PyDataset):
    def __init__(self, x, y, batch_size, w=None, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.w, self.bs = x, y, w, batch_size
        self.epochs_ended = 0

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __getitem__(self, i):
        s = slice(i * self.bs, (i + 1) * self.bs)
        return (self.x[s], self.y[s]) if self.w is None else (self.x[s], self.y[s], self.w[s])

    def on_epoch_end(self):
        self.epochs_ended += 1


def generator(x, y, bs, w=None):
    for i in range(0, len(x), bs):
        yield (x[i:i + bs], y[i:i + bs]) if w is None else (x[i:i + bs], y[i:i + bs], w[i:i + bs])


# ------------------------------------------------------------------ weights
def test_zero_weights_train_on_the_rest_scaled_by_its_share():
    # sum_over_batch_size divides by the batch (N), not by the weights: a step with weights 1 on n of
    # the N samples and 0 on the others is a step on those n samples with the rate scaled by n / N
    x, y = data(n=16)
    keep = np.arange(16) % 4 != 0
    weighted, subset = mlp(bn=False), mlp(bn=False, lr=0.1 * keep.sum() / 16)
    weighted.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    subset.compile(optimizer=optimizers.SGD(0.1 * keep.sum() / 16), loss="sparse_categorical_crossentropy")
    weighted.train_on_batch(x, y, sample_weight=keep.astype(float))
    subset.train_on_batch(x[keep], y[keep])
    for a, b in zip(weighted.get_weights(), subset.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)


def test_unit_weights_change_nothing(kernel_path):
    x, y = data()
    a, b = mlp(), mlp()
    ha = a.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=1)
    hb = b.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=1, sample_weight=np.ones(len(x)))
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-6)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_class_weight_is_a_sample_weight_per_label():
    x, y = data()
    table = {0: 2.0, 1: 0.5}  # class 2 not listed: weight 1, as Keras
    a, b = mlp(), mlp()
    ha = a.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=3, class_weight=table)
    hb = b.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=3,
               sample_weight=np.array([table.get(int(c), 1.0) for c in y]))
    assert ha.history == hb.history and same_weights(a, b)
    # one-hot targets: the class is the argmax
    c = normlab.Sequential([normlab.Input((5,)), L.Dense(3, activation="softmax")], seed=0)
    c.compile(optimizer="sgd", loss="categorical_crossentropy")
    d = normlab.Sequential([normlab.Input((5,)), L.Dense(3, activation="softmax")], seed=0)
    d.compile(optimizer="sgd", loss="categorical_crossentropy")
    onehot = np.eye(3)[y]
    c.fit(x, onehot, epochs=1, verbose=0, seed=0, class_weight=table)
    d.fit(x, onehot, epochs=1, verbose=0, seed=0, sample_weight=np.array([table.get(int(k), 1.0) for k in y]))
    assert same_weights(c, d)


def test_weighted_evaluate_is_keras_weighted_mean():
    x, y = data()
    model = mlp()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    w = np.random.default_rng(5).uniform(0, 2, len(x))
    p = model.predict(x).astype(np.float64)
    per_sample = -np.log(np.clip(p[np.arange(len(y)), y] / p.sum(axis=1), 1e-7, 1 - 1e-7))
    res = model.evaluate(x, y, sample_weight=w, return_dict=True, verbose=0)
    assert res["loss"] == pytest.approx(np.sum(w * per_sample) / len(y), rel=1e-5)
    correct = (p.argmax(axis=1) == y).astype(float)
    # Keras weighs only weighted_metrics; a plain metric counts each sample once (checked against Keras 3.15)
    assert res["accuracy"] == pytest.approx(correct.mean(), rel=1e-12)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  weighted_metrics=["accuracy"])
    res = model.evaluate(x, y, sample_weight=w, return_dict=True, verbose=0)
    assert res["accuracy"] == pytest.approx(correct.mean(), rel=1e-12)
    assert res["weighted_accuracy"] == pytest.approx(np.sum(w * correct) / w.sum(), rel=1e-12)


# ------------------------------------------------------------------ datasets and generators
def test_a_pydataset_trains_as_the_same_arrays(kernel_path):
    x, y = data()
    a, b = mlp(), mlp()
    ha = a.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    ds = Batches(x, y, 8)
    hb = b.fit(ds, epochs=3, verbose=0, shuffle=False)
    assert ha.history == hb.history and same_weights(a, b)
    assert ds.epochs_ended == 3
    np.testing.assert_array_equal(a.predict(ds), a.predict(x))
    assert a.evaluate(ds, verbose=0) == pytest.approx(a.evaluate(x, y, verbose=0), rel=1e-6)


def test_a_shuffled_pydataset_is_reproducible_with_a_seed():
    x, y = data()
    runs = []
    for _ in range(2):
        model = mlp()
        model.fit(Batches(x, y, 8, workers=2), epochs=2, verbose=0, seed=7)
        runs.append(model.get_weights())
    for u, v in zip(*runs):
        np.testing.assert_array_equal(u, v)


def test_a_generator_with_weights_trains_as_the_arrays():
    x, y = data()
    w = np.random.default_rng(2).uniform(0.5, 1.5, len(x))
    a, b = mlp(), mlp()
    a.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, sample_weight=w)
    b.fit(generator(x, y, 8, w), epochs=1, verbose=0)
    assert same_weights(a, b)


def test_a_one_shot_generator_runs_out_with_keras_warning():
    x, y = data()
    model = mlp()
    with pytest.warns(UserWarning, match="ran out of data"):
        history = model.fit(generator(x, y, 8), epochs=3, verbose=0)
    assert len(history.history["loss"]) == 1 and model.optimizer.iterations == 6


def test_steps_per_epoch_bounds_an_endless_generator():
    x, y = data()

    def endless():
        while True:
            yield from generator(x, y, 8)

    model = mlp()
    history = model.fit(endless(), steps_per_epoch=4, epochs=5, verbose=0)
    assert len(history.history["loss"]) == 5 and model.optimizer.iterations == 20


def test_steps_per_epoch_with_arrays_continues_through_the_data():
    # 6 batches a pass, 4 steps an epoch: epochs of 4, 2 (the pass ends), 4, 2, 4 steps
    x, y = data()
    model = mlp()
    seen = []
    cb = normlab.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(model.optimizer.iterations))
    history = model.fit(x, y, batch_size=8, steps_per_epoch=4, epochs=5, verbose=0, seed=0, callbacks=[cb],
                        validation_data=(x[:8], y[:8]))
    assert seen == [4, 6, 10, 12, 16]
    assert len(history.history["val_loss"]) == 5  # a validation every 4 steps (or at the end of a pass)


def test_validation_freq_and_steps():
    x, y = data()
    model = mlp()
    history = model.fit(x, y, batch_size=8, epochs=4, verbose=0, validation_data=Batches(x, y, 8),
                        validation_steps=2, validation_freq=2)
    assert len(history.history["loss"]) == 4 and len(history.history["val_loss"]) == 2
    expected = model.evaluate(x[:16], y[:16], verbose=0, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-6)


def test_a_generator_builds_a_fresh_model_on_its_first_batch():
    x, y = data()
    model = normlab.Sequential([L.Dense(4), L.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(generator(x, y, 8), epochs=1, verbose=0, seed=0)
    assert model.built and model.input_shape == (None, 5)


# ------------------------------------------------------------------ mistakes
@pytest.mark.parametrize("call,match", [
    (lambda m, x, y: m.fit(generator(x, y, 8), y, verbose=0), "'y' must not be given"),
    (lambda m, x, y: m.fit(generator(x, y, 8), validation_split=0.2, verbose=0), "'validation_split' needs arrays"),
    (lambda m, x, y: m.fit(x, y, class_weight={"a": 1.0}, verbose=0), "'class_weight' keys"),
    (lambda m, x, y: m.fit(x, y, class_weight={0: -1.0}, verbose=0), "'class_weight' values"),
    (lambda m, x, y: m.fit(x, y, class_weight=[1.0], verbose=0), "'class_weight' parameter"),
    (lambda m, x, y: m.fit(x, y, sample_weight=np.ones(3), verbose=0), "'sample_weight'"),
    (lambda m, x, y: m.fit(x, y, sample_weight=-np.ones(len(x)), verbose=0), "'sample_weight'"),
    (lambda m, x, y: m.fit((b[:1] for b in generator(x, y, 8)), verbose=0), "holds no targets"),
    (lambda m, x, y: m.fit(x, y, steps_per_epoch=0, verbose=0), "'steps_per_epoch'"),
    (lambda m, x, y: m.fit(x, y, validation_freq=0, verbose=0), "'validation_freq'"),
    (lambda m, x, y: m.fit(x, y, validation_data=(x, y, np.ones(2)), verbose=0), "'validation_data'"),
    (lambda m, x, y: m.evaluate(x, y, steps=-1, verbose=0), "'steps'"),
])
def test_mistakes_are_named_and_change_nothing(call, match):
    x, y = data()
    model = mlp()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, x, y)
    assert model.optimizer.iterations == 0 and all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
