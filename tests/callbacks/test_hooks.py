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
