"""A training step is a transaction: an interrupt at any line leaves the model as before or as after the step.

``KeyboardInterrupt`` is injected at each line that one ``train_on_batch``
executes (``sys.settrace`` counts them), one injection per run, on a fresh
copy of the same model. After each run the model's whole state (parameters,
moving statistics, optimizer slots and counters, the noise layers'
generators) must equal either the state before the step or the state after
an uninterrupted step, never a mix.
"""

import sys

import numpy as np
import pytest

import normlab
from normlab import optimizers
from normlab.layers import (
    Activation,
    BatchNormalization,
    Dense,
    Dropout,
    Flatten,
    GaussianNoise,
    GroupNormalization,
    InstanceNormalization,
    LayerNormalization,
    Reshape,
    RMSNormalization,
)


def bn_adam(noise=False, clipnorm=None):
    def make():
        layers = [Dense(6, use_bias=False), BatchNormalization(), Activation("relu")]
        if noise:
            layers += [Dropout(0.3, seed=1), GaussianNoise(0.2, seed=2)]
        layers += [Dense(3, activation="softmax")]
        model = normlab.Sequential(layers)
        model.build((None, 4), seed=0)
        model.compile(optimizer=optimizers.Adam(0.01, clipnorm=clipnorm), loss="sparse_categorical_crossentropy")
        return model

    return make


def build(layers):
    model = normlab.Sequential(layers)
    model.build((None, 4), seed=0)
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    return model


def bn_every_path():
    """Batch norm in each of its other paths (the models above fuse it with relu): the plain row
    kernels, the NumPy kernels (a feature axis that is not the last), ghost batches, renormalization."""
    return build([
        Dense(6), BatchNormalization(momentum=0.9), Reshape((2, 3)), BatchNormalization(axis=1), Flatten(),
        BatchNormalization(virtual_batch_size=4), BatchNormalization(renorm=True, unbiased_moving_variance=True),
        Dense(3, activation="softmax"),
    ])


def sample_norms():
    """Layer, RMS, group and instance normalization (parameters only, no moving statistics)."""
    return build([
        Dense(6), LayerNormalization(), RMSNormalization(), Reshape((3, 2)), GroupNormalization(groups=1),
        InstanceNormalization(), Flatten(), Dense(3, activation="softmax"),
    ])


MODELS = {
    "adam": bn_adam(),
    "adam_noise": bn_adam(noise=True),
    "adam_clipnorm": bn_adam(clipnorm=0.5),
    "bn_every_path": bn_every_path,
    "sample_norms": sample_norms,
}
#: models whose layers run the same (NumPy) kernels on either path but one: their NumPy-path run
#: would add only the plain batch norm on the NumPy kernels, which the models above cover there
NUMBA_PATH_ONLY = {"bn_every_path"}


def full_state(model):
    # get_weights: every layer's parameters and buffers (moving statistics, renorm statistics)
    out = [("weights", w.copy()) for w in model.get_weights()]
    opt = model.optimizer
    out += [(f"opt/{k}", np.array(v, copy=True)) for k, v in sorted(opt.get_state().items())]
    out.append(("iterations", np.array(opt.iterations)))
    out.append(("skipped", np.array(opt.skipped_steps)))
    for i, layer in enumerate(model.layers):
        if hasattr(layer, "get_rng_state"):
            out.append((f"layer {i} rng", np.array(repr(layer.get_rng_state()))))
    return out


def same(a, b):
    return len(a) == len(b) and all(ka == kb and np.array_equal(va, vb) for (ka, va), (kb, vb) in zip(a, b))


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8)


def prepared(make):
    model = make()
    x, y = data()
    model.train_on_batch(x, y)  # kernels compiled, optimizer built, workspaces made
    return model


def lines_of_one_step(make) -> int:
    model = prepared(make)
    x, y = data()
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        model.train_on_batch(x, y)
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_interrupt_at_any_line_leaves_the_step_undone_or_done(name, kernel_path):
    if name in NUMBA_PATH_ONLY and kernel_path == "numpy":
        pytest.skip("covered on the NumPy path by the other models")
    make = MODELS[name]
    x, y = data()
    reference = prepared(make)
    before = full_state(reference)
    reference.train_on_batch(x, y)
    after = full_state(reference)
    assert not same(before, after)

    n = lines_of_one_step(make)
    assert n > 50
    outcomes = {"before": 0, "after": 0}
    for k in range(1, n + 1):
        model = prepared(make)
        assert same(full_state(model), before)
        count = 0

        def tracer(frame, event, arg):
            nonlocal count
            if event == "line":
                count += 1
                if count == k:
                    raise KeyboardInterrupt(f"injected at line event {k}")
            return tracer

        sys.settrace(tracer)
        try:
            model.train_on_batch(x, y)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        state = full_state(model)
        if same(state, before):
            outcomes["before"] += 1
        elif same(state, after):
            outcomes["after"] += 1
        else:
            mixed = [ka for (ka, va), (_, vb), (_, vc) in zip(state, before, after)
                     if not (np.array_equal(va, vb) or np.array_equal(va, vc))]
            differ_before = [ka for (ka, va), (_, vb) in zip(state, before) if not np.array_equal(va, vb)]
            pytest.fail(f"an interrupt at line event {k} of {n} left a mixed state: {differ_before} "
                        f"changed, of which {mixed} match neither before nor after")
        # the model trains on afterwards, as one that was never interrupted
        if outcomes["after"] == 0 and k % 50 == 0:
            model.train_on_batch(x, y)
            assert same(full_state(model), after)
    assert outcomes["before"] > 0 and outcomes["after"] > 0
