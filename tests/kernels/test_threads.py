"""normlab's own threads: one limit shared with BLAS, results independent of the thread count, fork.

The chunked kernels normally take only large inputs (``MIN_PARALLEL_ELEMENTS``);
here the threshold is lowered so that small arrays exercise them quickly.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from normlab.kernels import _threads, batchnorm_rows

pytestmark = pytest.mark.skipif(not batchnorm_rows.enabled(), reason="numba kernels off")


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(_threads, "MIN_PARALLEL_ELEMENTS", 0)


def _bn_step(rng, shape, dtype, act, threads, monkeypatch):
    """One training forward + backward of the row kernels at ``threads`` threads; every output."""
    monkeypatch.setattr(_threads, "get_num_threads", lambda: threads)
    m, c = shape
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    mm, mv = np.zeros(c, dtype), np.ones(c, dtype)
    out, mean, inv_std, saved = np.empty_like(x), np.empty(c), np.empty(c), np.empty(2 * c + 1)
    act_out = None if act is None else np.empty_like(x)
    kind = None if act is None else batchnorm_rows.KINDS[act]
    cache = batchnorm_rows.train_forward(x, gamma, beta, 1e-3, 0.99, 1.0, mm, mv, out, mean, inv_std, saved, 1.0,
                                         kind, act_out)
    dy = rng.standard_normal(shape).astype(dtype)
    dx, dgamma, dbeta = np.empty_like(x), np.zeros(c, dtype), np.zeros(c, dtype)
    s = None if act is None else (out if act == "relu" else act_out)
    batchnorm_rows.train_backward(dy, cache, gamma, dx, dgamma, dbeta, False, kind, s)
    return [a for a in (out, act_out, mean, inv_std, mm, mv, saved[:-1], dx, dgamma, dbeta) if a is not None]


@pytest.mark.parametrize("act,dtype", [(None, np.float64), ("relu", np.float32), ("sigmoid", np.float32),
                                       ("tanh", np.float64)])
@pytest.mark.parametrize("shape", [(1030, 7), (203, 300)])
def test_batchnorm_same_bits_at_any_thread_count(small_threshold, monkeypatch, act, dtype, shape):
    results = []
    for threads in (1, 2, 3, 8):
        results.append(_bn_step(np.random.default_rng(0), shape, dtype, act, threads, monkeypatch))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("act", [None, "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(2000, 130), (9000, 16)])
def test_batchnorm_chunked_gives_the_one_call_kernels_bits(monkeypatch, act, shape):
    # the one-call kernels sum over the same chunks, in the same order
    monkeypatch.setattr(_threads, "MIN_PARALLEL_ELEMENTS", 0)
    chunked = _bn_step(np.random.default_rng(1), shape, np.float32, act, 2, monkeypatch)
    monkeypatch.setattr(_threads, "MIN_PARALLEL_ELEMENTS", 1 << 62)
    one_call = _bn_step(np.random.default_rng(1), shape, np.float32, act, 2, monkeypatch)
    for a, b in zip(chunked, one_call):
        np.testing.assert_array_equal(a, b)


def test_chunked_nan_input_reports_and_writes_nothing(small_threshold, monkeypatch):
    monkeypatch.setattr(_threads, "get_num_threads", lambda: 2)
    x = np.ones((600, 3), np.float32)
    x[517, 1] = np.nan
    mm, mv = np.full(3, 7, np.float32), np.full(3, 9, np.float32)
    status = batchnorm_rows.train_forward(x, None, None, 1e-3, 0.9, 1.0, mm, mv, np.empty_like(x), np.empty(3),
                                          np.empty(3), np.empty(7), 1.0)
    assert status == batchnorm_rows.NOT_FINITE
    assert (mm == 7).all() and (mv == 9).all()


def test_run_parts_covers_every_part_once_and_raises():
    seen = []
    _threads.run_parts(lambda lo, hi: seen.extend(range(lo, hi)), 10, 3)
    assert sorted(seen) == list(range(10))
    assert _threads.split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert _threads.split(2, 8) == [(0, 1), (1, 2)]

    def fail(lo, hi):
        if lo > 0:
            raise ValueError("part")

    with pytest.raises(ValueError, match="part"):
        _threads.run_parts(fail, 4, 2)


def test_limit_follows_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not _threads._blas_controllers():
        pytest.skip("no BLAS threadpoolctl knows")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert _threads.get_num_threads() == 1
    before = _threads.get_num_threads()
    try:
        assert _threads.set_num_threads(1) == before
        assert _threads.get_num_threads() == 1
        assert threadpoolctl.threadpool_info()[0]["num_threads"] == 1 or any(
            i["num_threads"] == 1 for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    finally:
        _threads.set_num_threads(before)


def test_set_num_threads_rejects_bad_values():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="set_num_threads"):
            _threads.set_num_threads(bad)


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork")
def test_kernels_run_in_a_forked_child(small_threshold, monkeypatch):
    # the pool is started in the parent, then a child forked from it runs the threaded kernels
    expected = _bn_step(np.random.default_rng(2), (640, 5), np.float32, "relu", 2, monkeypatch)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            got = _bn_step(np.random.default_rng(2), (640, 5), np.float32, "relu", 2, monkeypatch)
            ok = all(np.array_equal(a, b) for a, b in zip(expected, got))
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    answer = os.read(r, 1)
    os.close(r)
    assert status == 0 and answer == b"1"


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
def test_activations_same_bits_at_any_thread_count(monkeypatch, name):
    from normlab.kernels import activations

    monkeypatch.setattr(_threads, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(_threads, "BLOCK", 1000)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((70, 101)).astype(np.float32)
    da = rng.standard_normal(z.shape).astype(np.float32)
    fwd, bwd = getattr(activations, name), getattr(activations, name + "_backward")
    results = []
    for threads in (1, 2, 5):
        monkeypatch.setattr(_threads, "get_num_threads", lambda: threads)
        a = fwd(z)
        results.append((a, bwd(da, z, a)))
    for a, g in results[1:]:
        np.testing.assert_array_equal(a, results[0][0])
        np.testing.assert_array_equal(g, results[0][1])


@pytest.mark.parametrize("centered", [True, False])
def test_layer_norm_forward_same_bits_at_any_thread_count(monkeypatch, centered):
    from normlab.kernels import layernorm

    monkeypatch.setattr(_threads, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(_threads, "BLOCK", 300)
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((97, 33)) * 3 + 2).astype(np.float32)
    gamma, beta = rng.standard_normal(33).astype(np.float32), rng.standard_normal(33).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(_threads, "get_num_threads", lambda: threads)
        y, cache = layernorm.normalize_forward(x, gamma, beta, axes=(1,), epsilon=1e-3, centered=centered)
        results.append((y, cache.mean, cache.inv_std))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape,f,strides", [((9, 28, 28, 1), 8, (1, 1)), ((5, 9, 11, 5), 7, (1, 1)),
                                             ((7, 12, 12, 4), 6, (2, 2)), ((2, 70, 70, 16), 8, (1, 1)),
                                             ((2, 120, 120, 16), 4, (1, 1))])
def test_gemm_convolution_same_bits_at_any_thread_count(monkeypatch, shape, f, strides):
    # (2, 70, 70, 16): OpenBLAS's own threads changed dW's bits there; (2, 120, 120, 16): bands of rows
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from normlab.kernels import _conv_gemm, conv

    monkeypatch.setattr(_threads, "MIN_PARALLEL_FLOPS", 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    k = rng.standard_normal((3, 3, shape[3], f)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        with threadpoolctl.threadpool_limits(threads):  # normlab's limit is BLAS's
            y, cache = conv.conv2d_forward(x, k, None, padding="same", strides=strides, algorithm="gemm")
            dx, dw, db = conv.conv2d_backward(np.cos(y), cache, k)
        results.append((y, dx, dw, db))
    assert len(_conv_gemm._row_tiles(2, 120, 120, 48, 4, 2)) > 2  # several tiles per image
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_one_pool_holds_blas_on_one_thread_and_keeps_the_limit():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not _threads._blas_controllers():
        pytest.skip("no BLAS that threadpoolctl controls")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with _threads.one_pool():
            assert _threads.get_num_threads() == 2
            assert all(c.get_num_threads() == 1 for c in _threads._blas_controllers())
            with _threads.one_pool():  # nested: free
                assert _threads.get_num_threads() == 2
        assert _threads.get_num_threads() == 2 and _threads._held is None
    with threadpoolctl.threadpool_limits(1, user_api="blas"), _threads.one_pool():
        assert _threads.get_num_threads() == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_one_pool_gives_everything_back_whatever_line_an_interrupt_hits(threads):
    # tests/models/test_interrupts.py interrupts a step at each line in turn: one_pool had left
    # _held at 1 (so every later get_num_threads said 1) and SciPy's BLAS pinned at 1 thread
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        limits = [c.get_num_threads() for c in _threads._blas_controllers()]
        k, reached_the_end = 0, False
        while not reached_the_end:
            k += 1
            count = 0

            def tracer(frame, event, arg):
                nonlocal count
                if event == "line" and frame.f_code.co_filename == _threads.__file__:
                    count += 1
                    if count == k:
                        raise KeyboardInterrupt(f"injected at line event {k}")
                return tracer

            sys.settrace(tracer)
            try:
                with _threads.one_pool():
                    pass
                reached_the_end = True
            except KeyboardInterrupt:
                pass
            finally:
                sys.settrace(None)
            assert _threads._held is None, k
            assert [c.get_num_threads() for c in _threads._blas_controllers()] == limits, k
            assert _threads.get_num_threads() == limits[0] if limits else True
        assert k > 5


@pytest.mark.parametrize("m", [1000, 130, 4099])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_gives_the_same_bits_at_any_thread_count(monkeypatch, dtype, m):
    monkeypatch.setattr(_threads, "MIN_PARALLEL_FLOPS", 0)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, 300)).astype(dtype)
    b = rng.standard_normal((300, 70)).astype(dtype)
    outside = _threads.matmul(a, b)  # outside one_pool: one BLAS call
    np.testing.assert_array_equal(outside, a @ b)
    monkeypatch.setattr(_threads, "_held", 1)
    one = _threads.matmul(a, b)
    # the blocks may sum in another order than one call (BLAS kernels differ by row count)
    np.testing.assert_allclose(one, outside, rtol=0, atol=300 * 8 * np.finfo(dtype).eps)
    for threads in (2, 3, 8):
        monkeypatch.setattr(_threads, "_held", threads)
        np.testing.assert_array_equal(_threads.matmul(a, b), one)
        np.testing.assert_array_equal(_threads.matmul(a.T.copy().T, b), one)  # a strided view
        out = np.empty_like(one)
        assert _threads.matmul(a, b, out=out) is out
        np.testing.assert_array_equal(out, one)


def test_one_pool_restores_blas_after_an_exception():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not _threads._blas_controllers():
        pytest.skip("no BLAS that threadpoolctl controls")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with pytest.raises(KeyError), _threads.one_pool():
            raise KeyError("inside the step")
        assert _threads._held is None
        assert all(c.get_num_threads() == 2 for c in _threads._blas_controllers())


def _openblas_haswell_kernels() -> bool:
    """OpenBLAS running its Haswell kernels (Haswell and later Intel cores, and AMD Zen)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    info = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    return bool(info) and all(i.get("internal_api") == "openblas" and i.get("architecture") in ("Haswell", "Zen")
                              for i in info)


@pytest.mark.parametrize("m,k,n", [(1024, 784, 100), (784, 1024, 100), (100, 1024, 100), (4099, 300, 70)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_blocks_give_the_one_call_bits_on_openblas(monkeypatch, dtype, m, k, n):
    # with block bounds on multiples of MATMUL_ALIGN rows, OpenBLAS's Haswell kernels give each
    # row the same bits in a block as in the whole call (blocks on multiples of 16 or 64 rows did
    # not): there a training step's products also match a plain x @ w
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not _openblas_haswell_kernels():
        pytest.skip("a property of OpenBLAS's Haswell kernels")
    rng = np.random.default_rng(5)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    at = rng.standard_normal((k, m)).astype(dtype).T  # a transposed operand, as in dW = x.T @ dz
    monkeypatch.setattr(_threads, "_held", 2)
    assert len(_threads._row_blocks(m, k, n)) >= 2
    with threadpoolctl.threadpool_limits(1, user_api="blas"):  # as inside one_pool, and in a 1-thread step
        for x in (a, at):
            np.testing.assert_array_equal(_threads.matmul(x, b), np.matmul(x, b))


def test_row_blocks_follow_the_shape():
    blocks = _threads._row_blocks(1024, 100, 100)  # 10M multiply-adds: two blocks, one per core of two
    assert blocks == [(0, 528), (528, 1024)]
    blocks = _threads._row_blocks(1024, 784, 100)  # 80M: one block per MATMUL_BLOCK_FLOPS (16.8M)
    assert len(blocks) == 4
    assert len(_threads._row_blocks(8192, 784, 100)) == _threads.MATMUL_BLOCKS
    assert [lo for lo, _ in blocks] == sorted({lo for lo, _ in blocks})
    assert all(lo % _threads.MATMUL_ALIGN == 0 for lo, _ in blocks) and blocks[-1][1] == 1024
    assert _threads._row_blocks(100, 1024, 100) == [(0, 48), (48, 100)]
    assert _threads._row_blocks(1024, 100, 10) is None  # under MIN_PARALLEL_FLOPS: one call
    assert _threads._row_blocks(40, 10**5, 100) is None  # one block of rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmuls_gives_matmuls_bits_at_any_thread_count_in_one_hand_off(monkeypatch, dtype):
    monkeypatch.setattr(_threads, "MIN_PARALLEL_FLOPS", 1 << 16)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((700, 90)).astype(dtype)
    dz = rng.standard_normal((700, 60)).astype(dtype)
    w = rng.standard_normal((90, 60)).astype(dtype)
    small = rng.standard_normal((30, 5)).astype(dtype)  # one call, run beside the others' blocks
    calls = []
    run_parts = _threads.run_parts
    monkeypatch.setattr(_threads, "run_parts", lambda *a: (calls.append(a[1:]), run_parts(*a))[1])
    for threads in (1, 2, 3, 8):
        monkeypatch.setattr(_threads, "_held", threads)
        expected = [_threads.matmul(x.T, dz), _threads.matmul(dz, w.T), _threads.matmul(small, small.T)]
        outs = [np.full((90, 60), np.nan, dtype), np.full((700, 90), np.nan, dtype), np.full((30, 30), np.nan, dtype)]
        calls.clear()
        _threads.matmuls([(x.T, dz, outs[0]), (dz, w.T, outs[1]), (small, small.T, outs[2])])
        assert len(calls) == 1 and calls[0][1] == threads  # one hand-off for all three
        for got, want in zip(outs, expected):
            np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(_threads, "_held", None)  # outside one_pool: one call each
    outs = [np.empty((90, 60), dtype), np.empty((700, 90), dtype)]
    calls.clear()
    _threads.matmuls([(x.T, dz, outs[0]), (dz, w.T, outs[1])])
    assert not calls
    np.testing.assert_array_equal(outs[0], x.T @ dz)
    np.testing.assert_array_equal(outs[1], dz @ w.T)


@pytest.mark.parametrize("bias", [False, True])
def test_dense_training_gives_the_one_thread_bits_at_two_threads(monkeypatch, bias):
    # the README's "the same bit for bit at any thread count", through fit, with any BLAS: a step
    # runs the same row blocks at 1, 2 or 3 threads (and dW, dx in one hand-off from 2)
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import normlab
    from normlab.layers import Activation, BatchNormalization, Dense
    from normlab.optimizers import SGD

    monkeypatch.setattr(_threads, "MIN_PARALLEL_FLOPS", 1 << 16)  # cut the small products too
    rng = np.random.default_rng(7)
    x = rng.random((300, 64), dtype=np.float32)
    y = rng.integers(0, 10, size=300)
    weights = []
    for threads in (1, 2, 3):
        model = normlab.Sequential([Dense(50, use_bias=bias), BatchNormalization(), Activation("sigmoid"),
                                    Dense(40, use_bias=bias), BatchNormalization(), Activation("sigmoid"),
                                    Dense(10, activation="softmax")])
        model.build((None, 64), seed=0)
        model.compile(optimizer=SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy")
        with threadpoolctl.threadpool_limits(threads, user_api="blas"):
            model.fit(x, y, batch_size=150, epochs=2, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for other in weights[1:]:
        for a, b in zip(weights[0], other):
            np.testing.assert_array_equal(a, b)
