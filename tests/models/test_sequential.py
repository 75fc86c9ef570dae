import json

import numpy as np
import pytest

import normlab
from normlab import initializers, optimizers
from normlab.callbacks import Callback
from normlab.layers import Activation, BatchNormalization, Dense
from normlab import Input, Sequential, layers
from normlab.testing import check_model_gradients


def blobs(rng, n=120, d=5, k=3):
    centers = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, n)
    x = centers[y] + rng.standard_normal((n, d))
    return x.astype(np.float32), y


def bn_net(k=3, **kw):
    return normlab.Sequential(
        [
            Dense(16, use_bias=False),
            BatchNormalization(),
            Activation("sigmoid"),
            Dense(k, activation="softmax", **kw),
        ]
    )


def compiled(model, lr=0.1, metrics=("accuracy",)):
    model.compile(optimizer=optimizers.SGD(learning_rate=lr), loss="sparse_categorical_crossentropy", metrics=list(metrics))
    return model


def test_fit_learns_and_history(rng):
    x, y = blobs(rng)
    model = compiled(bn_net())
    hist = model.fit(x, y, batch_size=20, epochs=15, verbose=0, seed=0, validation_split=0.25)
    h = hist.history
    assert set(h) >= {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert len(h["loss"]) == 15 and hist.epoch == list(range(15))
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["accuracy"][-1] > 0.9
    loss, acc = model.evaluate(x, y)
    assert acc > 0.9 and np.isfinite(loss)


def test_same_seed_same_run_bit_for_bit(rng):
    x, y = blobs(rng)
    runs = []
    for _ in range(2):
        model = compiled(bn_net())
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=123)
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    model = compiled(bn_net())
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=124)
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], model.get_weights()))


def test_validation_split_uses_last_samples(rng):
    x, y = blobs(rng, n=100)
    seen = []

    class Spy(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            pass

    model = compiled(bn_net())
    orig = model._train_step

    def spy(xb, yb, wb=None):
        seen.append(xb.copy())
        return orig(xb, yb, wb)

    model._train_step = spy
    model.fit(x, y, batch_size=100, epochs=1, validation_split=0.2, verbose=0, seed=0, callbacks=[Spy()])
    used = np.concatenate(seen)
    assert len(used) == 80
    assert {tuple(r) for r in used} == {tuple(r) for r in x[:80]}


def test_predict_evaluate_batches_and_single_sample(rng):
    x, y = blobs(rng)
    model = compiled(bn_net())
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    p = model.predict(x, batch_size=7)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(p, model.predict(x, batch_size=1000), rtol=1e-6)
    one = model.predict(x[:1])
    assert one.shape == (1, 3)
    np.testing.assert_allclose(model.predict_on_batch(x[:5]), p[:5], rtol=1e-6)
    res = model.test_on_batch(x, y, return_dict=True)
    assert set(res) == {"loss", "accuracy"}


def test_train_on_batch_matches_manual_step(rng):
    """One SGD step by hand: w <- w - lr * dL/dw, with the loss's fused gradient."""
    x, y = blobs(rng, n=8)
    x = x.astype(np.float64)
    model = compiled(normlab.Sequential([Dense(3, activation="softmax", dtype="float64")]), lr=0.5, metrics=())
    model.build((None, 5), seed=0)
    w0, b0 = model.layers[0].params["kernel"].copy(), model.layers[0].params["bias"].copy()
    p = model.predict(x)
    loss = model.train_on_batch(x, y)
    g = (p - np.eye(3)[y]) / len(x)
    np.testing.assert_allclose(model.layers[0].params["kernel"], w0 - 0.5 * x.T @ g, rtol=1e-10)
    np.testing.assert_allclose(model.layers[0].params["bias"], b0 - 0.5 * g.sum(0), rtol=1e-10)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(8), y])), rel=1e-10)


def test_whole_model_gradient_check_float64(rng):
    x, y = blobs(rng, n=12)
    model = normlab.Sequential(
        [
            Dense(6, use_bias=False, kernel_regularizer="l2"),
            BatchNormalization(gamma_initializer=initializers.RandomUniform(0.5, 1.5, seed=0)),
            Activation("tanh"),
            Dense(5, activation="elu", bias_regularizer="l1"),
            BatchNormalization(axis=-1, center=False),
            Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x64 = x.astype(np.float64)
    model(x64)  # builds every layer in float64
    assert model.dtype == np.float64
    errs = check_model_gradients(model, x64, y)
    assert len(errs) == 8
    assert max(errs.values()) < 1e-6, errs


def test_fused_and_explicit_logits_paths_agree(rng):
    x, y = blobs(rng, n=10)
    x = x.astype(np.float64)
    a = normlab.Sequential([Dense(4, activation="tanh", kernel_initializer=initializers.GlorotUniform(seed=0)), Dense(3, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=1))])
    b = normlab.Sequential([Dense(4, activation="tanh", kernel_initializer=initializers.GlorotUniform(seed=0)), Dense(3, kernel_initializer=initializers.GlorotUniform(seed=1))])
    a.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    b.compile(optimizer="sgd", loss=normlab.losses.SparseCategoricalCrossentropy(from_logits=True))
    ga, gb = a.compute_gradients(x, y), b.compute_gradients(x, y)
    for (la, ka), (lb, kb) in zip(ga, gb):
        np.testing.assert_allclose(ga[(la, ka)], gb[(lb, kb)], rtol=1e-10, atol=1e-14)


class _Boom(optimizers.SGD):
    def apply(self, grads, params, names=None):
        raise FloatingPointError("boom")


def test_failed_step_leaves_model_unchanged(rng):
    x, y = blobs(rng)
    model = compiled(bn_net())
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    before = model.get_weights()
    model.optimizer = _Boom(learning_rate=0.1)
    with pytest.raises(FloatingPointError):
        model.train_on_batch(x, y)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "xmod,ymod,exc,match",
    [
        (lambda x: x, lambda y: np.where(y == 0, 7, y), ValueError, r"labels must be in \[0, 3\)"),
        (lambda x: x, lambda y: np.where(y == 0, -1, y), ValueError, r"labels must be in \[0, 3\) for 3 output units; found label -1"),
        (lambda x: np.where(x > 2, np.nan, x), lambda y: y, ValueError, "NaN or inf"),
        # one inf in the last entry (the scalar tail of the vectorized check)
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == x.size - 1, np.inf, x), lambda y: y,
         ValueError, "'x' holds NaN or inf"),
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, -np.inf, x), lambda y: y,
         ValueError, "'x' holds NaN or inf"),
        (lambda x: x[:, :4], lambda y: y, ValueError, r"'x' must have shape \(None, 5\) \(the model's input shape\)"),
        (lambda x: x, lambda y: y[:-1], ValueError, "same number of samples"),
        (lambda x: x[:1], lambda y: y[:1], ValueError, "at least 2 values per feature"),
    ],
)
def test_bad_input_clear_error_and_model_unchanged(xmod, ymod, exc, match, rng):
    x, y = blobs(rng)
    model = compiled(bn_net())
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    before = model.get_weights()
    with pytest.raises(exc, match=match):
        model.train_on_batch(xmod(x), ymod(y))
    with pytest.raises(exc, match=match):
        model.fit(xmod(x), ymod(y), verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_non_finite_float_targets_clear_error_and_model_unchanged(rng):
    x, _ = blobs(rng)
    model = normlab.Sequential([Dense(4, activation="relu"), BatchNormalization(), Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    t = rng.standard_normal((len(x), 2)).astype(np.float32)
    model.fit(x, t, epochs=1, verbose=0, seed=0)
    before = model.get_weights()
    for bad in (np.nan, np.inf, -np.inf):
        tb = t.copy()
        tb[-1, -1] = bad
        with pytest.raises(ValueError, match="'y' holds NaN or inf"):
            model.train_on_batch(x, tb)
        with pytest.raises(ValueError, match="'y' holds NaN or inf"):
            model.fit(x, tb, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_not_compiled_and_bad_fit_arguments(rng):
    x, y = blobs(rng)
    model = bn_net()
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y)
    compiled(model)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, validation_split=1.5)
    with pytest.raises(ValueError, match="verbose"):
        model.fit(x, y, verbose=5)


def test_callbacks_hooks_and_stop_training(rng):
    x, y = blobs(rng)
    events = []

    class Rec(Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin{epoch}")

        def on_train_batch_end(self, batch, logs=None):
            assert "loss" in logs

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end{epoch}")
            if epoch == 1:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            events.append("train_end")

    model = compiled(bn_net())
    hist = model.fit(x, y, epochs=10, verbose=0, callbacks=[Rec()], seed=0)
    assert events == ["train_begin", "epoch_begin0", "epoch_end0", "epoch_begin1", "epoch_end1", "train_end"]
    assert len(hist.history["loss"]) == 2


def test_verbose_progress_bar_and_epoch_lines(rng, capsys):
    x, y = blobs(rng)
    model = compiled(bn_net())
    model.fit(x, y, epochs=2, verbose=2, seed=0)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "loss" in out
    model.fit(x, y, epochs=1, verbose=1, seed=0)
    err = capsys.readouterr().err
    assert "Epoch 1/1" in err


def test_summary_and_config_round_trip(rng):
    x, y = blobs(rng)
    model = compiled(bn_net())
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "BatchNormalization" in text and "Trainable params: 163 " in text and "Non-trainable params: 32 " in text
    # as Keras 3, once the optimizer holds state its variables are part of the total
    assert f"Total params: {195 + model._optimizer_param_count():,}" in text
    cfg = json.loads(json.dumps(model.get_config()))
    clone = normlab.Sequential.from_config(cfg)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.predict(x), model.predict(x), rtol=1e-6)
    with pytest.raises(ValueError, match="must hold 7 arrays, got 6"):
        clone.set_weights(model.get_weights()[:-1])


def test_changing_trainable_requires_recompile(rng):
    x, y = blobs(rng)
    model = compiled(bn_net())
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    model.layers[0].trainable = False
    with pytest.raises(RuntimeError, match="compile"):
        model.train_on_batch(x, y)
    compiled(model)
    w = model.layers[0].params["kernel"].copy()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    np.testing.assert_array_equal(model.layers[0].params["kernel"], w)


def test_history_logs_learning_rate_and_global_norm(rng):
    x, y = blobs(rng, n=40)
    model = normlab.Sequential([Dense(3, activation="softmax")])
    sched = optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    model.compile(optimizer=optimizers.SGD(learning_rate=sched), loss="sparse_categorical_crossentropy")
    norms = []

    class Spy(Callback):
        def on_train_batch_end(self, batch, logs=None):
            norms.append(self.model.optimizer.last_global_norm)

    hist = model.fit(x, y, batch_size=20, epochs=2, verbose=0, seed=0, callbacks=[Spy()])
    # 2 steps per epoch: after epoch 1, 2 steps taken -> lr 0.05; after epoch 2 -> 0.025
    np.testing.assert_allclose(hist.history["learning_rate"], [0.05, 0.025])
    np.testing.assert_allclose(hist.history["global_norm"], [np.mean(norms[:2]), np.mean(norms[2:])])
    # and it is the norm of the gradients the model computed for that step
    probe = normlab.Sequential([Dense(3, activation="softmax")])
    probe.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy")
    probe.build((None, 5), seed=0)
    g = probe.compute_gradients(x[:20], y[:20])
    probe.train_on_batch(x[:20], y[:20])
    expected = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in g.values()))
    assert probe.optimizer.last_global_norm == pytest.approx(expected, rel=1e-6)


def test_parameters_live_in_one_flat_buffer(rng):
    x, y = blobs(rng)
    model = compiled(bn_net())
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    flat_g, flat_p = model._flat
    views = [l.params[k] for l, k in model._refs]
    assert all(np.shares_memory(v, flat_p) for v in views)
    assert all(np.shares_memory(l.grads[k], flat_g) for l, k in model._refs)
    assert flat_p.size == sum(v.size for v in views) == 163
    # per-variable clipping keeps the arrays apart and trains identically to the reference rule
    m2 = bn_net()
    m2.compile(optimizer=optimizers.SGD(learning_rate=0.1, clipnorm=1.0), loss="sparse_categorical_crossentropy")
    m2.fit(x, y, epochs=1, verbose=0, seed=0)
    assert m2._flat is None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN on purpose
def test_non_finite_gradient_names_the_parameter_and_changes_nothing(rng):
    x, y = blobs(rng)
    model = compiled(bn_net())
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    before = model.get_weights()
    model.layers[3].params["kernel"][0, 0] = np.inf  # poisons the gradients of the layers below
    with pytest.raises(FloatingPointError, match=r"parameter '(dense|batch_normalization)[_0-9]*/(kernel|gamma|beta)'"):
        model.train_on_batch(x, y)
    after = model.get_weights()
    for i, (a, b) in enumerate(zip(before, after)):
        if i == 5:  # the poisoned kernel itself
            continue
        np.testing.assert_array_equal(a, b)


def test_logs_added_by_callbacks_reach_history(rng):
    x, y = blobs(rng)

    class Adds(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["custom"] = epoch * 10.0

    hist = compiled(bn_net()).fit(x, y, epochs=3, verbose=0, seed=0, callbacks=[Adds()])
    assert hist.history["custom"] == [0.0, 10.0, 20.0]


@pytest.mark.parametrize("extra", [None, "noise"])
def test_skipping_the_gradient_zeroing_changes_nothing(extra, rng):
    # Dense and BatchNormalization overwrite their gradients on a fresh step, so a model made of
    # them skips zeroing the flat gradient buffer; any other layer brings the zeroing back
    x, y = blobs(rng)

    def run(force_zeroing):
        layers = list(bn_net().layers)
        if extra == "noise":
            layers.insert(1, normlab.layers.NoisyDense(8, seed=1))
        model = compiled(normlab.Sequential(layers))
        model.build((None, 5), seed=0)
        model.train_on_batch(x[:20], y[:20])
        assert model._fresh_grads is (extra is None)
        if force_zeroing:
            model._fresh_grads = False
        for i in range(1, 5):
            model.train_on_batch(x[20 * i : 20 * i + 20], y[20 * i : 20 * i + 20])
        return model.get_weights()

    for a, b in zip(run(False), run(True)):
        np.testing.assert_array_equal(a, b)


def test_shuffled_fit_trains_on_each_epochs_permutation_in_turn(rng):
    # fit gathers every shuffled batch on its own; the run equals training on a shuffled copy in order
    x, y = blobs(rng, n=110)  # a last partial batch of 10
    seed, batch = 3, 25
    entropy = np.random.SeedSequence(seed).entropy
    shuffled = compiled(bn_net())
    shuffled.build((None, 5), seed=0)
    hist = shuffled.fit(x, y, batch_size=batch, epochs=2, verbose=0, seed=seed)
    in_order = compiled(bn_net())
    in_order.build((None, 5), seed=0)
    losses = []
    for epoch in range(2):
        perm = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(1, epoch))).permutation(len(x))
        h = in_order.fit(x[perm], y[perm], batch_size=batch, epochs=1, verbose=0, shuffle=False)
        losses += h.history["loss"]
    assert hist.history["loss"] == losses
    for a, b in zip(shuffled.get_weights(), in_order.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the last batch's input, as the first layer kept it, is that batch's rows
    last = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(1, 1))).permutation(len(x))[100:]
    np.testing.assert_array_equal(shuffled.layers[0]._cache.x, x[last])


@pytest.mark.parametrize("with_callback", [False, True])
def test_evaluate_activity_penalty_per_batch(rng, with_callback):
    """Keras: evaluate's loss is the batch-size-weighted mean of each batch's loss plus that batch's penalties
    (an activity penalty differs per batch; normlab once added only the last batch's)."""
    model = Sequential([Input((3,)), layers.Dense(2, kernel_regularizer="l2"),
                        layers.ActivityRegularization(l1=0.3, l2=0.2)], seed=0)
    model.compile("sgd", "mse")
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = rng.standard_normal((10, 2)).astype(np.float32)
    kernel_penalty = 0.01 * float(np.sum(np.square(model.layers[0].kernel, dtype=np.float64)))
    expected = 0.0
    for i in range(0, 10, 4):
        h = model.layers[0](x[i:i + 4]).astype(np.float64)
        batch_loss = np.mean((h - y[i:i + 4]) ** 2)
        activity = (0.3 * np.abs(h).sum() + 0.2 * np.square(h).sum()) / len(h)
        expected += (batch_loss + activity + kernel_penalty) * len(h)
    callbacks = [normlab.callbacks.LambdaCallback()] if with_callback else None
    got = model.evaluate(x, y, batch_size=4, verbose=0, callbacks=callbacks)
    np.testing.assert_allclose(got, expected / 10, rtol=1e-5)


def test_weighted_metrics_keras_names_and_values(rng, tmp_path):
    """compile(weighted_metrics=...): Keras's names ("weighted_<name>" beside a plain metric of that name) and
    sample-weighted values; kept through normlab's file, pickling and a .keras file."""
    import pickle

    model = Sequential([Input((3,)), layers.Dense(2)], seed=0)
    model.compile("sgd", "mse", metrics=["mae"], weighted_metrics=["mae", "mse"])
    assert [m.name for m in model.metrics] == ["mae", "weighted_mae", "mse"]
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = rng.standard_normal((10, 2)).astype(np.float32)
    w = np.linspace(0.0, 2.0, 10)
    res = model.evaluate(x, y, sample_weight=w, batch_size=4, verbose=0, return_dict=True)
    err = model.predict(x, verbose=0).astype(np.float64) - y
    assert res["weighted_mae"] == pytest.approx(np.sum(w * np.abs(err).mean(axis=1)) / w.sum(), rel=1e-6)
    assert res["mse"] == pytest.approx(np.sum(w * np.square(err).mean(axis=1)) / w.sum(), rel=1e-6)
    hist = model.fit(x, y, sample_weight=w, epochs=1, verbose=0).history
    assert {"loss", "mae", "weighted_mae", "mse"} <= set(hist)
    model.save(tmp_path / "w.npz")
    copies = [normlab.load_model(tmp_path / "w.npz"), pickle.loads(pickle.dumps(model))]
    try:
        import h5py  # noqa: F401
        model.save(tmp_path / "w.keras")
        copies.append(normlab.load_model(tmp_path / "w.keras"))
    except ImportError:
        pass
    for other in copies:
        assert [m.name for m in other.metrics] == ["mae", "weighted_mae", "mse"]
        assert other.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True) == pytest.approx(
            model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True), rel=1e-6)
    with pytest.raises(TypeError, match="'weighted_metrics' must be a list"):
        model.compile("sgd", "mse", weighted_metrics="mae")
