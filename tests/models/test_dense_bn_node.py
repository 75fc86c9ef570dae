"""The executor's Dense(use_bias=False) + BatchNormalization + Activation node (models/_dense_bn_node.py): where it
forms, that its kept checks' paths are taken, and that a run through it is the run without it, bit for bit."""

import numpy as np
import pytest

import normlab
from normlab import optimizers
from normlab.kernels import _backend
from normlab.layers import Activation, BatchNormalization, Dense
from normlab.models import executor
from normlab.models._dense_bn_node import DenseBatchNormActivation

pytestmark = pytest.mark.usefixtures("kernel_path")


def _layers(dtype, hidden=(12, 3), act="relu", first_bias=False):
    out = []
    for k, units in enumerate(hidden):
        out += [Dense(units, use_bias=first_bias and k == 0, dtype=dtype), BatchNormalization(dtype=dtype),
                Activation(act, dtype=dtype)]
    return out + [Dense(3, activation="softmax", dtype=dtype)]


def _model(dtype="float32", **kw):
    model = normlab.Sequential(_layers(dtype, **kw))
    model.build((None, 5), seed=4)
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return model


def _nodes(model):
    if not hasattr(model, "_executor"):
        model._prepare_training()  # (what the first training call does)
    return [n.layer for n in model._executor.nodes if isinstance(n.layer, DenseBatchNormActivation)]


def _state(model):
    out = model.get_weights() + [g.copy() for layer in model.layers for g in layer.grads.values()]
    for layer in model.layers:
        cache = layer._cache
        if isinstance(cache, tuple):
            out += [np.asarray(v).copy() for v in cache if isinstance(v, np.ndarray)]
    return out


def _run(model, steps=5, replace_at=None):
    rng = np.random.default_rng(0)
    losses = []
    for k in range(steps):
        if k == replace_at:
            model.layers[0].params["kernel"] = model.layers[0].params["kernel"] * 0.5  # a new array object
        x = (rng.standard_normal((16, 5)) * 2 + 0.5).astype(model.dtype)
        losses.append(model.train_on_batch(x, rng.integers(0, 3, 16)))
    return losses


def test_where_the_node_forms():
    assert len(_nodes(_model())) == 2
    assert len(_nodes(_model(first_bias=True))) == 1  # a Dense with a bias keeps its own node
    plain = normlab.Sequential(_layers("float32"))
    plain._fuse_layers = False
    plain.build((None, 5), seed=0)
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert not _nodes(plain)


@pytest.mark.parametrize("act", ["relu", "elu"])
@pytest.mark.parametrize("replace_at", [None, 3])
@pytest.mark.parametrize("hidden", [(12, 3), (3, 12)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_run_through_the_node_is_the_run_without_it(dtype, hidden, replace_at, act, monkeypatch):
    with_node = _model(dtype, hidden=hidden, act=act)
    losses_a = _run(with_node, replace_at=replace_at)
    first = _nodes(with_node)[0]
    if _backend.numba_enabled() and act == "relu":
        assert first._fwd_fast and first._bwd is not None  # the kept checks' paths ran
    else:  # elu: the pair's own two passes (no fused kernel), so the layers' own passes every step
        assert first._fwd is None and not first._fwd_fast
    monkeypatch.setattr(executor.Executor, "_with_dense_pairs", staticmethod(lambda order, consumers: order))
    without = _model(dtype, hidden=hidden, act=act)
    assert not _nodes(without)
    losses_b = _run(without, replace_at=replace_at)
    assert losses_a == losses_b
    for a, b in zip(_state(with_node), _state(without)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_numba_switched_off_between_steps_takes_the_layers_own_passes(kernel_path):
    if kernel_path != "numba":
        pytest.skip("switches numba off from the numba path")
    model = _model()
    _run(model, steps=3)
    previous = _backend.use_numba(False)
    try:
        _run(model, steps=1)
        assert not _nodes(model)[0]._fwd_fast
        assert model.layers[1]._cache[0] == "train"  # the batch norm's NumPy path
    finally:
        _backend.use_numba(previous)
