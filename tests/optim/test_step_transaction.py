"""``bind`` / ``step``: the layout the optimizer chooses, and a step as one transaction.

The interrupt test injects ``KeyboardInterrupt`` (with ``sys.settrace``) at
every line executed during one ``step()`` and checks that the optimizer is
then exactly as before the step or exactly as after it, on both paths.
"""

import math
import sys

import numpy as np
import pytest

from normlab import optimizers as O
from normlab.optim import transforms as T

SHAPES = ((3, 4), (5,), (2, 3))

CASES = {
    "adam": lambda: O.Adam(learning_rate=0.01),
    "sgd momentum": lambda: O.SGD(learning_rate=0.05, momentum=0.9),
    "adam clipnorm": lambda: O.Adam(learning_rate=0.01, clipnorm=0.5),
    "rmsprop": lambda: O.RMSprop(learning_rate=0.01),
    "lion": lambda: O.Lion(learning_rate=0.01),
    "nadam weight decay": lambda: O.Nadam(learning_rate=0.01, weight_decay=0.1),
    "sgd skip": lambda: O.SGD(learning_rate=0.05, momentum=0.9, on_nonfinite="skip"),
    "adamw": lambda: O.AdamW(learning_rate=0.01, weight_decay=0.1),
    "adam clipvalue": lambda: O.Adam(learning_rate=0.01, clipvalue=0.5),
    "sgd global clipnorm weight decay": lambda: O.SGD(learning_rate=0.05, momentum=0.9, global_clipnorm=1.0,
                                                      weight_decay=0.01),
    "adam global clipnorm skip": lambda: O.Adam(learning_rate=0.01, global_clipnorm=1.0, on_nonfinite="skip"),
}



def bound(name, dtype=np.float32):
    """An optimizer bound to three arrays after two steps, with the next gradients in place."""
    rng = np.random.default_rng(0)
    opt = CASES[name]()
    params, grads = opt.bind([rng.standard_normal(s).astype(dtype) for s in SHAPES],
                             [np.zeros(s, dtype) for s in SHAPES], ["a", "b", "c"])
    for step in range(3):
        for g in grads:
            g[...] = rng.standard_normal(g.shape) * 3
        if step < 2:
            opt.step()
    if name.endswith("skip"):
        grads[1][2] = np.inf
    return opt, params


def snapshot(opt, params):
    out = {f"param/{i}": p.copy() for i, p in enumerate(params)}
    out.update(opt.get_state())
    out["last_global_norm"] = np.array(opt.last_global_norm)
    return out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def run_interrupted_at(opt, k):
    """Run ``opt.step()``, raising KeyboardInterrupt at the ``k``-th line executed (counting from 0)."""
    seen = [0]

    def tracer(frame, event, arg):
        if event == "line":
            if seen[0] == k:
                raise KeyboardInterrupt(f"line {k}")
            seen[0] += 1
        return tracer

    sys.settrace(tracer)
    try:
        opt.step()
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(None)
    return False


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_interrupt_at_any_line_leaves_the_step_undone_or_done(name, numba_path):
    opt, params = bound(name)
    before = snapshot(opt, params)
    counted = []

    def counter(frame, event, arg):
        if event == "line":
            counted.append(1)
        return counter

    sys.settrace(counter)
    try:
        opt.step()
    finally:
        sys.settrace(None)
    after = snapshot(opt, params)
    n_lines = len(counted)
    assert not same(before, after)
    assert n_lines > 5
    outcomes = set()
    for k in range(n_lines):
        opt, params = bound(name)
        interrupted = run_interrupted_at(opt, k)
        assert interrupted, f"line {k} of {n_lines} was not reached"
        state = snapshot(opt, params)
        if same(state, before):
            outcomes.add("before")
        elif same(state, after):
            outcomes.add("after")
        else:
            diff = [key for key in state if not np.array_equal(state[key], before[key], equal_nan=True)]
            pytest.fail(f"interrupted at line {k} of {n_lines}: a mix of before and after ({diff} changed)")
        # the counters tell whether the step committed
        committed = opt.iterations + opt.skipped_steps == int(after["iterations"] + after["skipped_steps"])
        assert committed == same(state, after)
    assert "before" in outcomes


def test_bind_returns_views_into_one_flat_buffer_and_step_equals_apply():
    rng = np.random.default_rng(1)
    values = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads_seq = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(4)]
    opt = O.Adam(learning_rate=0.01)
    params, grads = opt.bind([v.copy() for v in values], [np.zeros(s, np.float32) for s in SHAPES])
    flat_g, flat_p = opt.flat_buffers
    assert all(np.shares_memory(p, flat_p) for p in params)
    assert all(np.shares_memory(g, flat_g) for g in grads)
    assert [p.shape for p in params] == [v.shape for v in values]
    for p, v in zip(params, values):
        np.testing.assert_array_equal(p, v)
    ref = O.Adam(learning_rate=0.01)
    ref_params = [v.copy() for v in values]
    for gs in grads_seq:
        for g, src in zip(grads, gs):
            g[...] = src
        opt.step()
        ref.apply(gs, ref_params)
    for a, b in zip(params, ref_params):
        np.testing.assert_array_equal(a, b)
    state, ref_state = opt.get_state(), ref.get_state()
    assert state.keys() == ref_state.keys() and "velocity/2" in state
    for k in state:
        np.testing.assert_array_equal(state[k], ref_state[k])


def test_per_variable_links_get_views_and_mixed_dtypes_get_a_buffer_each():
    params = [np.ones((2, 2), np.float32), np.ones(3, np.float64), np.ones(4, np.float32)]
    opt = O.SGD(learning_rate=0.1, momentum=0.5)
    views, grads = opt.bind(params)
    assert opt.flat_buffers is None  # two dtypes: two buffers
    assert [v.dtype for v in views] == [p.dtype for p in params]
    assert np.shares_memory(views[0], views[2]) is False and views[0].base is not None
    for g in grads:
        g[...] = 1.0
    opt.step()
    np.testing.assert_allclose(views[1], 0.9)
    clip = O.SGD(learning_rate=1.0, clipnorm=1.0)
    views, grads = clip.bind([np.zeros(4, np.float32), np.zeros(9, np.float32)])
    assert clip.flat_buffers is None  # clipnorm sees the variables apart
    grads[0][...] = 3.0
    grads[1][...] = 0.1
    clip.step()
    np.testing.assert_allclose(views[0], -0.5, rtol=1e-6)  # norm 6 clipped to 1
    np.testing.assert_allclose(views[1], -0.1, rtol=1e-6)  # norm 0.3: unchanged


def test_rebinding_keeps_the_slots_when_the_parameters_match():
    opt = O.Adam(learning_rate=0.1)
    params, grads = opt.bind([np.ones(3, np.float32)])
    grads[0][...] = 1.0
    opt.step()
    state = opt.get_state()
    params2, _ = opt.bind([params[0].copy()])
    assert opt.iterations == 1
    for k, v in opt.get_state().items():
        np.testing.assert_array_equal(v, state[k])
    opt.bind([np.ones(4, np.float32)])  # another trainable set: fresh slots, counters kept
    assert opt.iterations == 1 and not opt.get_state()["momentum/0"].any()


def test_a_chain_is_an_optimizer_and_a_rule_chain_is_fused(numba_path):
    from normlab.optim import ChainOptimizer

    tx = T.chain(T.scale_by_adam(), T.scale_by_learning_rate())
    values = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)]
    grads = [np.cos(values[0]) * 2]
    a, b = ChainOptimizer(tx, learning_rate=0.01), O.Adam(learning_rate=0.01)
    pa, pb = [values[0].copy()], [values[0].copy()]
    for _ in range(3):
        a.apply(grads, pa)
        b.apply(grads, pb)
    np.testing.assert_array_equal(pa[0], pb[0])
    assert a._fusable(grads, pa) == numba_path
    with pytest.raises(ValueError, match="no JSON config"):
        a.get_config()
    with pytest.raises(TypeError, match="GradientTransformation"):
        ChainOptimizer(O.Adam())


def test_a_link_that_returns_new_state_arrays_is_committed_too():
    def init(params):
        return {"count": np.zeros((), np.float64), "acc": [np.zeros_like(p) for p in params]}

    def update(updates, state, params, info):
        new = {"count": state["count"] + 1, "acc": [a + u for a, u in zip(state["acc"], updates)]}
        return [-0.5 * u for u in updates], new

    opt = O.get(T.GradientTransformation(init, update))
    w = [np.zeros(2), np.zeros(3)]
    for _ in range(2):
        opt.apply([np.ones(2), np.ones(3)], w)
    state = opt.get_state()
    assert state["count"] == 2 and state["acc/1"].tolist() == [2.0, 2.0, 2.0]
    np.testing.assert_array_equal(w[0], [-1.0, -1.0])
    assert math.isfinite(opt.last_global_norm)
