"""Every Keras 3 callback hook is called where Keras calls it (issue 22, part 5)."""

import numpy as np

import normlab
from normlab import layers as L
from normlab.callbacks import Callback

HOOKS = [
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
    "on_train_batch_end", "on_batch_begin", "on_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
    "on_predict_batch_begin", "on_predict_batch_end",
]


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []
        self.logs = {}


def _recording(name):
    def hook(self, *args):
        self.calls.append(name)
        if args and isinstance(args[-1], dict):
            self.logs[name] = args[-1]
        elif len(args) == 2 and isinstance(args[1], dict):
            self.logs[name] = args[1]
    return hook


for _name in HOOKS:
    # the train-batch hooks of the base class call on_batch_*: record both, as Keras's base does
    if _name in ("on_train_batch_begin", "on_train_batch_end"):
        def _chain(self, batch, logs=None, _n=_name):
            self.calls.append(_n)
            getattr(Callback, _n)(self, batch, logs)
        setattr(Recorder, _name, _chain)
    else:
        setattr(Recorder, _name, _recording(_name))


def model():
    m = normlab.Sequential([normlab.Input((3,)), L.Dense(2, activation="softmax")], seed=0)
    m.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def test_fit_with_validation_calls_the_train_and_test_hooks_in_order():
    x = np.ones((16, 3), np.float32)
    y = np.zeros(16, int)
    rec = Recorder()
    model().fit(x, y, batch_size=8, epochs=2, validation_data=(x[:12], y[:12]), validation_batch_size=5,
                verbose=0, callbacks=[rec])
    batch = ["on_train_batch_begin", "on_batch_begin", "on_train_batch_end", "on_batch_end"]
    test = ["on_test_begin"] + ["on_test_batch_begin", "on_test_batch_end"] * 3 + ["on_test_end"]
    epoch = ["on_epoch_begin"] + batch * 2 + test + ["on_epoch_end"]
    assert rec.calls == ["on_train_begin"] + epoch * 2 + ["on_train_end"]
    assert set(rec.logs["on_test_batch_end"]) == {"loss", "accuracy"}


def test_evaluate_and_predict_call_their_batch_hooks():
    x = np.ones((10, 3), np.float32)
    m = model()
    rec = Recorder()
    res = m.evaluate(x, np.zeros(10, int), batch_size=4, verbose=0, callbacks=[rec], return_dict=True)
    assert rec.calls == ["on_test_begin"] + ["on_test_batch_begin", "on_test_batch_end"] * 3 + ["on_test_end"]
    assert rec.logs["on_test_batch_end"]["loss"] == res["loss"]  # the running mean ends at the result
    rec = Recorder()
    out = m.predict(x, batch_size=4, callbacks=[rec])
    assert rec.calls == ["on_predict_begin"] + ["on_predict_batch_begin", "on_predict_batch_end"] * 3 + ["on_predict_end"]
    np.testing.assert_array_equal(rec.logs["on_predict_batch_end"]["outputs"], out[8:])
    np.testing.assert_array_equal(out, m.predict(x, batch_size=4))


def _hook_model():
    model = normlab.Sequential([L.Dense(3, activation="softmax")])
    model.build((None, 4), seed=0)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    return model, rng.standard_normal((20, 4)).astype(np.float32), rng.integers(0, 3, 20)


def test_older_names_and_instance_hooks_are_called_every_step_and_epoch_logs_are_unchanged():
    # fit calls only the callbacks with train-batch hooks of their own (decided once per fit) and,
    # when none reads a step's logs, makes them once at the epoch's end: the same numbers
    class Old(Callback):
        def __init__(self):
            super().__init__()
            self.ends, self.begins = [], []

        def on_batch_begin(self, batch, logs=None):
            self.begins.append(batch)

        def on_batch_end(self, batch, logs=None):
            self.ends.append((batch, dict(logs)))

    class Epochs(Callback):
        def __init__(self):
            super().__init__()
            self.logs = []

        def on_epoch_end(self, epoch, logs=None):
            self.logs.append(dict(logs))

    seen = []
    inst = Callback()
    inst.on_train_batch_end = lambda batch, logs=None: seen.append(batch)
    runs = []
    for cbs in ([Old(), Epochs(), inst], [Epochs()]):
        model, x, y = _hook_model()
        hist = model.fit(x, y, batch_size=6, epochs=2, verbose=0, callbacks=cbs, shuffle=False)
        runs.append((cbs, hist.history))
    (old, with_hooks, _), history = runs[0]
    (without_hooks,), history2 = runs[1]
    assert old.begins == [0, 1, 2, 3] * 2 and [b for b, _ in old.ends] == [0, 1, 2, 3] * 2
    assert seen == [0, 1, 2, 3] * 2
    assert history == history2 and with_hooks.logs == without_hooks.logs
    # the epoch's logs are the last step's running means
    assert old.ends[3][1]["loss"] == with_hooks.logs[0]["loss"]
    assert old.ends[3][1]["accuracy"] == with_hooks.logs[0]["accuracy"]
