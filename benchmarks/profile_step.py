"""Profile normlab's training step (the internal ``_train_step`` that ``fit`` runs per batch).

Usage::

    PYTHONPATH=src python benchmarks/profile_step.py --batch 60 --steps 3000
    PYTHONPATH=src python benchmarks/profile_step.py --batch 1024 --plain --sort cumtime
    PYTHONPATH=src python benchmarks/profile_step.py --cnn --batch 128 --steps 30 --sections
    PYTHONPATH=src python benchmarks/profile_step.py --intercept 512 1024 --adam --steps 200 --rounds 5
    PYTHONPATH=src python benchmarks/profile_step.py --ceiling --batch 1024 --rounds 15 --peer compile

``--ceiling`` times, at 1 and 2 threads in one process, round by round: the step, its
matrix products alone as the step runs them (normlab's row blocks inside ``one_pool``) and as
one BLAS call each on BLAS's own threads, and (``--peer compile``) torch.compile's step; each
round records how much CPU other processes used meanwhile, and the medians are given over all
rounds and over the quiet ones. ``peer / products`` is the most a step could gain over the
peer if everything but the products cost nothing.

``--intercept B1 B2`` times the phases at two batch sizes, in interleaved rounds in one
process, and splits each into a fixed part ``a`` and a per-row part ``b`` (``T = a + b * B``
through the two medians): what of a step does not shrink when the batch is cut (a data-parallel
rank's half batch).

cProfile adds a per-call cost (~1 us per Python call), so small-batch numbers
overstate Python overhead a little; ``--sections`` instead times each phase of
the step (forward per layer, loss, backward per layer, optimizer) by
wrapping those methods in ``perf_counter`` timers, without a profiler.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

if __package__ in (None, ""):
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, _root)
    try:
        import normlab  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(_root, "src"))
    __package__ = "benchmarks"

from ._timing import pinned_threads
from .bench_train_step import build_normlab, make_data, product_operands

__all__ = ["prepared_step", "profile_step", "section_times", "intercepts", "ceiling"]


def prepared_step(batch: int, bn: bool = True, seed: int = 0, adam: bool = False):
    model = build_normlab(bn, seed=seed)
    if adam:  # bench_distributed's optimizer (the BN-paper net on several ranks)
        from normlab.optimizers import Adam

        model.compile(optimizer=Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = make_data(batch, seed)
    model.train_on_batch(x, y)
    xp, yp = model._prepare_xy(x, y, "profile")
    model._prepare_training()
    return model, xp, yp


def profile_step(batch: int, steps: int, bn: bool = True, sort: str = "tottime", limit: int = 25,
                 cnn: bool = False) -> str:
    model, xp, yp = prepared_cnn_step(batch) if cnn else prepared_step(batch, bn)
    for _ in range(max(20, steps // 10)):
        model._train_step(xp, yp)
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    for _ in range(steps):
        model._train_step(xp, yp)
    pr.disable()
    dt = (time.perf_counter() - t0) / steps
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats(sort).print_stats(limit)
    net = "CNN" if cnn else ("BN" if bn else "plain")
    return f"batch {batch}, {net} net, {steps} steps, {dt * 1e6:.1f} us/step under cProfile\n" + s.getvalue()


_NODE_METHODS = ("call", "_train_forward", "_train_forward_sparse_ce", "_train_backward", "backward_from_logits")
_MODEL_METHODS = ("_gradients", "_loss_and_output_grad", "_regularization_loss", "_reset_grads", "_apply_optimizer")


def prepared_cnn_step(batch: int = 128, seed: int = 0):
    """The Fashion-MNIST CNN of ``examples/fashion_mnist_cnn.py`` (``bench_fashion_epoch``'s model), ready to step."""
    from .bench_fashion_epoch import make_cases

    _, _, (model, x, y) = make_cases(batch=batch, n_images=batch, use_torch=False, seed=seed)
    xp, yp = model._prepare_xy(x[:batch], y[:batch], "profile")
    return model, xp, yp


def section_times(batch: int, steps: int, bn: bool = True, cnn: bool = False,
                  clock=time.perf_counter, adam: bool = False) -> list[tuple[str, float]]:
    """Median microseconds per phase of ``model._train_step``, timed by wrapping methods.

    The real ``_train_step`` runs; the passes of each node of the model's
    executor (a layer, or a fused batch norm + activation:
    ``_train_forward`` / ``_train_forward_sparse_ce`` / ``call`` for the
    output, ``_train_backward`` / ``backward_from_logits``), the model's
    phases and ``optimizer.apply`` / ``optimizer.step`` are wrapped (on the
    instances) in ``perf_counter`` timers. Nested timers (e.g.
    ``model._gradients`` around the nodes) each report their own inclusive
    time. Wrapping adds about 0.3 us per wrapped call. ``clock=time.thread_time`` times the
    thread's CPU time instead (one thread on a shared machine: the work without the waits).
    """
    model, xp, yp = prepared_cnn_step(batch) if cnn else prepared_step(batch, bn, adam=adam)
    acc: dict[str, list[float]] = {}
    step_acc: dict[str, float] = {}
    pc = clock

    def wrap(obj, meth, label):
        fn = getattr(obj, meth, None)
        if fn is None or not callable(fn):
            return

        def timed(*a, **k):
            t0 = pc()
            try:
                return fn(*a, **k)
            finally:
                step_acc[label] = step_acc.get(label, 0.0) + (pc() - t0)

        setattr(obj, meth, timed)

    for node in model._executor.nodes:
        layer = node.layer
        for meth in _NODE_METHODS:
            if meth in ("_train_backward", "backward_from_logits"):
                label = f"  bwd {layer.name}"
            elif meth == "_train_forward_sparse_ce":
                label = f"  fwd {layer.name} + loss (one kernel)"
            else:
                label = f"  fwd {layer.name}"
            wrap(layer, meth, label)
    for meth in _MODEL_METHODS:
        wrap(model, meth, f"model.{meth}")
    wrap(model.optimizer, "apply", "optimizer.apply")
    wrap(model.optimizer, "step", "optimizer.step")  # what the model calls once the optimizer is bound
    for i in range(steps + max(20, steps // 10)):
        step_acc.clear()
        t0 = pc()
        model._train_step(xp, yp)
        total = pc() - t0
        if i < max(20, steps // 10):
            continue  # warm-up
        step_acc["TOTAL model._train_step"] = total
        for k, v in step_acc.items():
            acc.setdefault(k, []).append(v)
    order = list(acc)
    fwd = [k for k in order if k.startswith("  fwd")]
    bwd = [k for k in order if k.startswith("  bwd")]
    rest = [k for k in order if k not in fwd and k not in bwd]
    return [(k, statistics.median(acc[k]) * 1e6) for k in rest[:-1] + fwd + bwd + rest[-1:]]


def intercepts(b1: int, b2: int, steps: int, rounds: int, bn: bool = True, adam: bool = False,
               clock=time.thread_time) -> list[tuple[str, float, float, float, float]]:
    """``(phase, us at b1, us at b2, a, b)`` per phase: the medians over ``rounds`` interleaved
    rounds of :func:`section_times` at each batch size, and ``T = a + b * B`` through them
    (``a`` in us per step, ``b`` in us per row)."""
    # phases by position (each round builds new models, whose layers get new names)
    runs: dict[int, list[list[float]]] = {b1: [], b2: []}
    labels: list[str] = []
    for r in range(rounds):
        for batch in ((b1, b2) if r % 2 == 0 else (b2, b1)):
            rows = section_times(batch, steps, bn, clock=clock, adam=adam)
            labels = labels or [k for k, _ in rows]
            for i, (_, us) in enumerate(rows):
                if len(runs[batch]) <= i:
                    runs[batch].append([])
                runs[batch][i].append(us)
    out = []
    for i, k in enumerate(labels):
        t1, t2 = statistics.median(runs[b1][i]), statistics.median(runs[b2][i])
        slope = (t2 - t1) / (b2 - b1)
        out.append((k, t1, t2, t1 - slope * b1, slope))
    return out


def _busy_cpu_s() -> float:
    """CPU seconds all processes have run (``/proc/stat``; 0 where it cannot be read)."""
    try:
        with open("/proc/stat") as fh:
            v = [int(t) for t in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _step_products(model, x):
    """The matrix products of one training step of the BN-paper ``model``, grouped as the step
    groups them (forward ``x W`` per Dense layer, then per layer from the last ``dW`` and
    ``dx`` in one :func:`~normlab.kernels._threads.matmuls` call, the first layer's ``dW``
    alone), inside ``one_pool``: normlab's row blocks and hand-offs, nothing else."""
    from normlab.kernels import _threads

    kernels, ins, outs, dzs, grads, dxs = product_operands(model, x)

    def products():
        with _threads.one_pool():
            for h, w, o in zip(ins, kernels, outs):
                _threads.matmul(h, w, out=o)
            for i in reversed(range(len(kernels))):
                pairs = [(ins[i].T, dzs[i], grads[i])]
                if i:
                    pairs.append((dzs[i], kernels[i].T, dxs[i]))
                _threads.matmuls(pairs)

    return products


def _wait_quiet(quiet: float, wait_s: float) -> None:
    """Return once other processes used at most ``quiet`` cores over 0.2 s, or after ``wait_s`` seconds."""
    t_end = time.perf_counter() + wait_s
    while time.perf_counter() < t_end:
        b0, c0, w0 = _busy_cpu_s(), time.process_time(), time.perf_counter()
        time.sleep(0.2)
        if (_busy_cpu_s() - b0) - (time.process_time() - c0) <= quiet * (time.perf_counter() - w0):
            return


def ceiling(batch: int = 1024, rounds: int = 15, target_s: float = 0.1, threads=(1, 2), peer: str | None = None,
            quiet: float = 0.25, wait_s: float = 0.0) -> dict:
    """Per thread count, medians (seconds) of the step, its products (normlab's blocks; BLAS's own
    threads) and the peer's step over ``rounds`` interleaved rounds; ``quiet``: the most CPU
    (in cores) other processes may have used during a round for it to count as quiet; ``wait_s``:
    before each round, wait up to this long for a quiet moment."""
    from threadpoolctl import threadpool_limits

    from .bench_train_step import _matrix_products, _torch_compile_case

    model, xp, yp = prepared_step(batch)
    cases = {"step": lambda: model._train_step(xp, yp), "products (normlab blocks)": _step_products(model, xp),
             "products (BLAS threads)": _matrix_products(model, xp)}
    if peer == "compile":
        x, y = make_data(batch, 0)
        cases["torch.compile step"] = _torch_compile_case(True, prepared_step(batch)[0], x, y, {})
    numbers = {}
    for name, fn in cases.items():  # calibrated at 1 thread (the slowest)
        with pinned_threads(1):
            for _ in range(3):
                fn()
            t0 = time.perf_counter()
            fn()
            numbers[name] = max(3, int(target_s / max(time.perf_counter() - t0, 1e-6)))
    times = {(t, k): [] for t in threads for k in cases}
    foreign = []
    for r in range(rounds):
        if wait_s > 0:
            _wait_quiet(quiet, wait_s)
        b0, c0, w0 = _busy_cpu_s(), time.process_time(), time.perf_counter()
        for t in (threads if r % 2 == 0 else threads[::-1]):
            with pinned_threads(t), threadpool_limits(t):
                names = list(cases) if r % 2 == 0 else list(cases)[::-1]
                for k in names:
                    fn, num = cases[k], numbers[k]
                    fn()
                    t0 = time.perf_counter()
                    for _ in range(num):
                        fn()
                    times[(t, k)].append((time.perf_counter() - t0) / num)
                    if k == "products (BLAS threads)" and t > 1:
                        # OpenBLAS's workers busy-wait about 0.1 s after a call on more than one
                        # thread: the next case would share a core with them (measured: normlab's
                        # split products ran at one-thread speed right after this case)
                        time.sleep(0.15)
        wall = time.perf_counter() - w0
        foreign.append(max(0.0, (_busy_cpu_s() - b0) - (time.process_time() - c0)) / wall)
    quiet_rounds = [i for i, f in enumerate(foreign) if f <= quiet]
    out = {"foreign_cores": foreign, "quiet_rounds": len(quiet_rounds), "rows": {}}
    for sel, idx in (("all", range(rounds)), ("quiet", quiet_rounds)):
        if not idx:
            continue
        out["rows"][sel] = {key: statistics.median(v[i] for i in idx) for key, v in times.items()}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="benchmarks/profile_step.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--plain", action="store_true", help="the net without BatchNormalization")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumtime, ncalls)")
    p.add_argument("--limit", type=int, default=25)
    p.add_argument("--sections", action="store_true", help="hand-timed phases instead of cProfile")
    p.add_argument("--cpu-time", action="store_true",
                   help="with --sections or --intercept: the calling thread's CPU time instead of the wall clock")
    p.add_argument("--intercept", type=int, nargs=2, metavar=("B1", "B2"),
                   help="phases at two batch sizes, interleaved: the fixed and the per-row part of each")
    p.add_argument("--rounds", type=int, default=5, help="--intercept: interleaved rounds")
    p.add_argument("--adam", action="store_true", help="Adam (bench_distributed's optimizer) instead of SGD")
    p.add_argument("--ceiling", action="store_true",
                   help="step, its products (normlab's blocks; BLAS's threads) and --peer at 1 and 2 threads")
    p.add_argument("--peer", choices=("compile",), help="--ceiling: time torch.compile's step too")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="--ceiling: before each round wait up to S seconds for other processes to go quiet")
    p.add_argument("--cnn", action="store_true",
                   help="the Fashion-MNIST CNN of examples/fashion_mnist_cnn.py instead of the BN-paper net")
    a = p.parse_args(argv)
    if a.ceiling:
        res = ceiling(a.batch, a.rounds, peer=a.peer, wait_s=a.wait_quiet)
        print(f"BN net, batch {a.batch}: medians of {a.rounds} interleaved rounds (ms); other processes' CPU "
              f"per round {min(res['foreign_cores']):.2f}-{max(res['foreign_cores']):.2f} cores, "
              f"{res['quiet_rounds']} rounds quiet (<= 0.25)")
        for sel, row in res["rows"].items():
            for t in sorted({t for t, _ in row}):
                vals = {k: v for (tt, k), v in row.items() if tt == t}
                step = vals["step"]
                line = "  ".join(f"{k} {v * 1e3:.3f}" for k, v in vals.items())
                extra = f"  step - products {1e3 * (step - vals['products (normlab blocks)']):.3f}"
                if "torch.compile step" in vals:
                    peer = vals["torch.compile step"]
                    extra += (f"  peer/step {peer / step:.2f}x  peer/products(BLAS) "
                              f"{peer / vals['products (BLAS threads)']:.2f}x  peer/products(normlab) "
                              f"{peer / vals['products (normlab blocks)']:.2f}x")
                print(f"  [{sel}] {t} thread(s): {line}{extra}")
        return
    with pinned_threads(a.threads):
        if a.intercept:
            b1, b2 = a.intercept
            clock = time.thread_time if a.cpu_time else time.perf_counter
            print(f"{'BN' if not a.plain else 'plain'} net, {'Adam' if a.adam else 'SGD'}, {a.threads} thread(s), "
                  f"median us per phase over {a.rounds} interleaved rounds of {a.steps} steps; T = a + b * B")
            print(f"  {'phase':<40s} {'B=' + str(b1):>9s} {'B=' + str(b2):>9s} {'a (us)':>9s} {'b (us/row)':>10s}")
            for k, t1, t2, fixed, slope in intercepts(b1, b2, a.steps, a.rounds, not a.plain, a.adam, clock):
                print(f"  {k:<40s} {t1:9.1f} {t2:9.1f} {fixed:9.1f} {slope:10.3f}")
        elif a.sections:
            clock = time.thread_time if a.cpu_time else time.perf_counter
            rows = section_times(a.batch, a.steps, not a.plain, a.cnn, clock)
            net = "CNN" if a.cnn else ("plain" if a.plain else "BN")
            print(f"batch {a.batch}, {net} net, median us per phase over {a.steps} steps")
            for k, us in rows:
                print(f"  {k:<28s} {us:9.1f}")
        else:
            print(profile_step(a.batch, a.steps, not a.plain, a.sort, a.limit, a.cnn))


if __name__ == "__main__":
    main()
