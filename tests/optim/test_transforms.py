"""The pure links: init/update with explicit state, chain, clipping properties, decay."""

import math

import numpy as np
import pytest

from normlab.optim import transforms as T


def arrays(rng, shapes=((3, 4), (5,), (2, 2, 2)), scale=1.0, dtype=np.float64):
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


def run(tx, grads, params, step=0, lr=0.1, scratch=True):
    """One update on copies; returns (updates, state)."""
    state = tx.init(params)
    info = T.StepInfo(step, lr, [np.empty_like(p) for p in params] if scratch else None)
    return tx.update([g.copy() for g in grads], state, params, info)


# ------------------------------------------------------------------ clipping
@pytest.mark.parametrize("c", [0.05, 0.5, 3.0, 100.0])
def test_global_clip_bounds_the_norm_and_is_exact_when_above(rng, c):
    g = arrays(rng, scale=0.7)
    norm = math.sqrt(sum(float(np.sum(a * a)) for a in g))
    out, _ = run(T.clip_by_global_norm(c), g, g)
    new = math.sqrt(sum(float(np.sum(a * a)) for a in out))
    assert new <= c * (1 + 1e-15)
    if norm > c:
        assert new == pytest.approx(c, rel=1e-14)
        for a, b in zip(out, g):  # the direction is kept: one common factor
            np.testing.assert_allclose(a, b * (c / norm), rtol=1e-15)
    else:
        for a, b in zip(out, g):
            np.testing.assert_array_equal(a, b)


def test_global_clip_float32_exact_to_float32_precision(rng):
    g = arrays(rng, shapes=((300, 200), (200,)), dtype=np.float32)
    out, _ = run(T.clip_by_global_norm(1.0), g, g)
    new = math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in out))
    assert new == pytest.approx(1.0, rel=2e-6) and out[0].dtype == np.float32


@pytest.mark.parametrize("c", [0.01, 0.3, 2.0])
def test_clipvalue_bounds_every_entry(rng, c):
    g = arrays(rng)
    out, _ = run(T.clip_by_value(c), g, g)
    for a, b in zip(out, g):
        assert np.abs(a).max() <= c
        np.testing.assert_array_equal(a, np.clip(b, -c, c))


@pytest.mark.parametrize("c", [0.2, 1.0, 2.5])
def test_clipnorm_bounds_each_variable_on_its_own(rng, c):
    g = arrays(rng, scale=0.6)
    out, _ = run(T.clip_by_norm(c), g, g)
    for a, b in zip(out, g):
        n_before, n_after = np.linalg.norm(b), np.linalg.norm(a)
        assert n_after <= c * (1 + 1e-15)
        if n_before > c:
            assert n_after == pytest.approx(c, rel=1e-14)
            np.testing.assert_allclose(a, b * (c / n_before), rtol=1e-15)
        else:
            np.testing.assert_array_equal(a, b)
    # at least one variable was clipped and one was not for these sizes
    norms = [np.linalg.norm(b) for b in g]
    assert c != 1.0 or (min(norms) < c < max(norms))


def test_clip_with_nonfinite_norm_gives_nan(rng):
    g = arrays(rng)
    g[1][2] = np.inf
    out, _ = run(T.clip_by_global_norm(1.0), g, g)
    assert all(np.isnan(a).all() for a in out)
    out, _ = run(T.clip_by_norm(1.0), g, g)
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()


def on_both_paths(fn):
    """``fn()`` with the numba kernels enabled and disabled (once where numba is absent)."""
    from normlab.kernels import _backend

    out = []
    for use in ([True, False] if _backend.NUMBA_AVAILABLE else [False]):
        previous = _backend.use_numba(use)
        try:
            out.append(fn())
        finally:
            _backend.use_numba(previous)
    return out


def test_global_norm_survives_float32_overflow():
    a = np.full(4, 1e20, dtype=np.float32)  # a*a overflows float32
    for norm in on_both_paths(lambda: T.global_norm([a, np.ones(3, np.float32)])):
        assert norm == pytest.approx(math.sqrt(4e40 + 3), rel=1e-6)
    for norm in on_both_paths(lambda: T.global_norm([np.array([np.nan], np.float32)])):
        assert math.isnan(norm)
    for norm in on_both_paths(lambda: T.global_norm([np.array([1.0, -np.inf])])):
        assert norm == math.inf


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-6), (np.float64, 1e-14)])
def test_global_norm_is_the_same_on_numba_and_numpy(rng, dtype, rtol):
    # big arrays (the vector partial sums) and odd sizes (the tails); then a strided view (NumPy only)
    g = arrays(rng, shapes=((257, 129), (7,), (3, 5, 2)), scale=3.0, dtype=dtype)
    for arrs in (g, g + [rng.standard_normal((6, 8)).astype(dtype)[:, ::2]]):
        exact = math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrs))
        for norm in on_both_paths(lambda: T.global_norm(arrs)):
            assert norm == pytest.approx(exact, rel=rtol)


# ------------------------------------------------------------------ scalings
def test_scale_by_learning_rate_and_scale():
    g = [np.array([1.0, -2.0])]
    out, _ = run(T.scale_by_learning_rate(), g, g, lr=0.25)
    np.testing.assert_array_equal(out[0], [-0.25, 0.5])
    out, _ = run(T.scale_by_learning_rate(flip_sign=False), g, g, lr=0.25)
    np.testing.assert_array_equal(out[0], [0.25, -0.5])
    out, _ = run(T.scale(3.0), g, g)
    np.testing.assert_array_equal(out[0], [3.0, -6.0])
    out, _ = run(T.identity(), g, g)
    np.testing.assert_array_equal(out[0], g[0])


@pytest.mark.parametrize("nesterov", [False, True])
def test_trace_is_keras_velocity_form(rng, nesterov):
    b, lr = 0.8, 0.1
    params = arrays(rng)
    tx = T.chain(T.scale_by_learning_rate(), T.trace(b, nesterov))
    state = tx.init(params)
    v = [np.zeros_like(p) for p in params]
    for step in range(4):
        g = arrays(rng)
        out, state = tx.update([a.copy() for a in g], state, params, T.StepInfo(step, lr))
        for i in range(len(params)):
            v[i] = b * v[i] - lr * g[i]
            expect = b * v[i] - lr * g[i] if nesterov else v[i]
            np.testing.assert_allclose(out[i], expect, rtol=1e-14, atol=1e-16)
            np.testing.assert_allclose(state[1]["momentum"][i], v[i], rtol=1e-14, atol=1e-16)
            assert not np.shares_memory(out[i], state[1]["momentum"][i])


def test_add_decayed_weights_reads_params_and_includes_lr(rng):
    params, g = arrays(rng), arrays(rng)
    out, _ = run(T.add_decayed_weights(0.3), g, params, lr=0.5)
    for a, u, p in zip(out, g, params):
        np.testing.assert_allclose(a, u - 0.5 * 0.3 * p, rtol=1e-15)


def test_adagrad_link_both_epsilon_forms(rng):
    params, g = arrays(rng), arrays(rng)
    for form, denom in (("keras", lambda r: np.sqrt(r + 0.01)), ("torch", lambda r: np.sqrt(r) + 0.01)):
        out, state = run(T.scale_by_adagrad(0.5, 0.01, form), g, params)
        for a, u, r in zip(out, g, state["accumulator"]):
            np.testing.assert_allclose(r, 0.5 + u * u, rtol=1e-15)
            np.testing.assert_allclose(a, u / denom(0.5 + u * u), rtol=1e-14)


# ------------------------------------------------------------ state handling
def test_chain_state_is_explicit_and_the_same_links_serve_two_parameter_sets(rng):
    tx = T.chain(T.clip_by_global_norm(1.0), T.scale_by_adam(0.9, 0.99, 1e-7), T.scale_by_learning_rate())
    pa, pb = arrays(rng), arrays(rng, shapes=((7,),))
    sa, sb = tx.init(pa), tx.init(pb)
    assert isinstance(sa, tuple) and len(sa) == 3 and sa[0] == {} and set(sa[1]) == {"momentum", "velocity"}
    ga = arrays(rng)
    # interleaving updates of another state does not change the result: no hidden state
    ref_state = tx.init(pa)
    ref, ref_state = tx.update([a.copy() for a in ga], ref_state, pa, T.StepInfo(0, 0.01))
    tx.update(arrays(rng, shapes=((7,),)), sb, pb, T.StepInfo(0, 0.01))
    out, sa = tx.update([a.copy() for a in ga], sa, pa, T.StepInfo(0, 0.01))
    for a, b in zip(out, ref):
        np.testing.assert_array_equal(a, b)


def test_scratch_is_optional_and_does_not_change_results(rng):
    params = arrays(rng)
    links = [
        T.chain(T.scale_by_learning_rate(), T.trace(0.9, nesterov=True), T.add_decayed_weights(0.1)),
        T.chain(T.scale_by_rms(0.9, 1e-7, centered=True), T.scale_by_learning_rate(), T.trace(0.5)),
        T.chain(T.scale_by_adam(amsgrad=True), T.scale_by_learning_rate()),
        T.chain(T.scale_by_nadam(), T.scale_by_learning_rate()),
        T.chain(T.scale_by_adagrad(), T.scale_by_learning_rate()),
        T.chain(T.scale_by_learning_rate(), T.nesterov_exact(0.9, 0.01)),
    ]
    for tx in links:
        s1, s2 = tx.init(params), tx.init(params)
        scratch = [np.full_like(p, np.nan) for p in params]  # garbage in the scratch must not matter
        for step in range(3):
            g = arrays(rng)
            o1, s1 = tx.update([a.copy() for a in g], s1, params, T.StepInfo(step, 0.01, scratch))
            o2, s2 = tx.update([a.copy() for a in g], s2, params, T.StepInfo(step, 0.01))
            for a, b in zip(o1, o2):
                np.testing.assert_array_equal(a, b)


def test_apply_updates_in_place(rng):
    params = arrays(rng)
    ids = [id(p) for p in params]
    before = [p.copy() for p in params]
    ups = arrays(rng)
    T.apply_updates(params, ups)
    assert [id(p) for p in params] == ids
    for p, b, u in zip(params, before, ups):
        np.testing.assert_array_equal(p, b + u)


def test_link_arguments_are_checked():
    with pytest.raises(ValueError, match="clipvalue"):
        T.clip_by_value(0.0)
    with pytest.raises(ValueError, match="momentum"):
        T.trace(1.5)
    with pytest.raises(ValueError, match="epsilon_form"):
        T.scale_by_adam(epsilon_form="paper")
    with pytest.raises(TypeError, match="GradientTransformation"):
        T.chain(T.identity(), lambda g: g)
