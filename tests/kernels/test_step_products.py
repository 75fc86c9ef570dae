"""benchmarks/profile_step.py --ceiling: the products it times are the step's own, at any thread count.

The ceiling a benchmark reports (a peer's step over the products alone) is only
as good as the products timed: the same shapes and the same grouping as the
training step's (forward ``x W`` per Dense layer, each layer's ``dW`` and ``dx``
in one ``matmuls`` hand-off), through normlab's row blocks inside ``one_pool``.
"""

from __future__ import annotations

import numpy as np
import pytest

threadpool_limits = pytest.importorskip("threadpoolctl").threadpool_limits

from benchmarks import profile_step  # noqa: E402
from normlab.kernels import _threads  # noqa: E402


def _matmul_log(monkeypatch):
    """Record the ``(a.shape, b.shape)`` of every product that goes through normlab's product helpers."""
    log = []
    real_matmul, real_matmuls = _threads.matmul, _threads.matmuls

    def matmul(a, b, out=None):
        log.append([(a.shape, b.shape)])
        return real_matmul(a, b, out=out)

    def matmuls(products):
        log.append([(a.shape, b.shape) for a, b, _ in products])
        return real_matmuls(products)

    monkeypatch.setattr(_threads, "matmul", matmul)
    monkeypatch.setattr(_threads, "matmuls", matmuls)
    return log


def test_the_products_timed_are_the_steps_products_in_the_steps_groups(monkeypatch):
    model, xp, yp = profile_step.prepared_step(96)
    log = _matmul_log(monkeypatch)
    model._train_step(xp, yp)
    step_calls = [c for c in log if c]
    log.clear()
    profile_step._step_products(model, xp)()
    # the output layer's forward product goes to the loss kernel's own call in the step; every
    # product the step hands to normlab's helpers is timed, grouped the same way
    timed = [c for c in log if c]
    for call in step_calls:
        assert call in timed
    kernels = [l.params["kernel"].shape for l in model.layers if "kernel" in l.params]
    n = xp.shape[0]
    expected = [[((n, k[0]), k)] for k in kernels]
    for i in reversed(range(len(kernels))):
        k = kernels[i]
        expected.append([((k[0], n), (n, k[1]))] + ([((n, k[1]), (k[1], k[0]))] if i else []))
    assert timed == expected


@pytest.mark.parametrize("threads", [1, 2])
def test_the_products_give_plain_matmul_values(threads):
    model, xp, _ = profile_step.prepared_step(96)
    products = profile_step._step_products(model, xp)
    with threadpool_limits(threads):
        products()
    # the closure's arrays: compare each output with NumPy's product of its inputs
    cells = dict(zip(products.__code__.co_freevars, (c.cell_contents for c in products.__closure__)))
    ins, kernels, outs = cells["ins"], cells["kernels"], cells["outs"]
    dzs, grads, dxs = cells["dzs"], cells["grads"], cells["dxs"]
    for i, w in enumerate(kernels):
        np.testing.assert_allclose(outs[i], ins[i] @ w, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grads[i], ins[i].T @ dzs[i], rtol=1e-4, atol=1e-4)
        if i:
            np.testing.assert_allclose(dxs[i], dzs[i] @ w.T, rtol=1e-5, atol=1e-5)


def test_ceiling_reports_every_case_at_each_thread_count():
    res = profile_step.ceiling(batch=64, rounds=2, target_s=0.001)
    assert len(res["foreign_cores"]) == 2
    assert all(f >= 0 for f in res["foreign_cores"])
    row = res["rows"]["all"]
    for t in (1, 2):
        for k in ("step", "products (normlab blocks)", "products (BLAS threads)"):
            assert row[(t, k)] > 0
