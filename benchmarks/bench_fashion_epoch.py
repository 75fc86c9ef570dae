"""One Fashion-MNIST training epoch of the example CNN: normlab vs the same network in PyTorch.

The network is the one of ``examples/fashion_mnist_cnn.py`` (built by its
``build_model`` with the example's defaults, augmentation off)::

    Conv 32 - BN - ReLU - MaxPool 2 - Conv 64 - BN - ReLU - Conv 64 - BN - ReLU - MaxPool 2
    - Flatten - Dense 128 (no bias) - BN - ReLU - Dropout 0.3 - Dense 10 softmax

(3 x 3 "same" convolutions without bias). PyTorch: the same layers in its
native channels-first layout, ``nn.Conv2d(bias=False, padding=1)``,
``nn.BatchNorm2d/1d(eps=1e-3, momentum=0.01)`` (Keras's defaults), ``nn.ReLU``,
``nn.MaxPool2d(2)``, ``nn.Flatten``, ``nn.Linear``, ``nn.Dropout(0.3)`` and
``nn.CrossEntropyLoss`` on the logits; inputs ``(N, 1, 28, 28)``. Before
timing, the torch net gets a copy of the normlab weights (kernels transposed,
the first Dense kernel's rows permuted from NHWC to NCHW flattening order) and
both nets' inference-mode outputs on the same images are compared
(``max_prob_diff``, the largest difference of the softmax outputs; ~1e-6 when
they compute the same function).

What is timed: one training step (forward in training mode, loss, backward,
Adam update) on a batch of real Fashion-MNIST images, the batches taken in
turn from the first ``--batches`` training images:

* ``normlab``: ``model._train_step(x, y)``, what ``fit`` runs per batch (the
  data are validated and converted once per ``fit``, not per step); the
  convolutions choose their algorithm (``algorithm="auto"``);
* ``normlab gemm`` (command line; ``gemm_variant=True``): the same with every
  convolution forced to the exact GEMM path;
* ``normlab @REV`` (``--rev REV``): the same network built by the package as it
  was at git revision ``REV`` (extracted and imported as ``normlab_rev``, as
  ``ab_train_step.py`` does), in the same process and rounds: before / after;
* ``torch``: ``opt.zero_grad(); ce(net(x), y).backward(); opt.step()``, NCHW;
* ``torch CL``: the same net and inputs in ``torch.channels_last``;
* ``torch.compile``: the net through ``torch.compile`` (skipped, with the
  reason, where inductor does not work). ``--torch-variants`` picks among them.

The GEMM floor: the step's convolution and dense FLOPs (forward and both
gradients, no input gradient for the first layer) at NumPy's float32 GEMM
rate, measured at the same thread count on the largest convolution's im2col
shape and on a 2048^3 product (one thread: on the thread's CPU time).
``--threads 1,2`` runs each thread count in turn; the ratio printed is the
fastest torch variant's time over normlab's.

Neither side computes metrics or shuffles. The epoch time is **extrapolated**:
the median step time times the number of steps of one epoch (60000 / batch,
469 for batches of 128). The step times are medians of ``repeats`` repeats of a
loop of steps (:func:`benchmarks._timing.time_interleaved`: both libraries
interleaved, each repeat ~``target_s`` seconds). With one thread the medians
of each step's thread CPU time (``time.thread_time``) are reported too: on a
shared machine they measure the work without the waiting for a core.
``--full-epoch`` also runs one real epoch of each (``model.fit(epochs=1)``
with shuffling and the accuracy metric; a torch loop over shuffled batches),
once, as a check of the extrapolation.

Usage::

    PYTHONPATH=src python benchmarks/bench_fashion_epoch.py                 # ~1-2 minutes
    PYTHONPATH=src python benchmarks/bench_fashion_epoch.py --quick         # smoke run, seconds
    PYTHONPATH=src python benchmarks/bench_fashion_epoch.py --threads 2 --full-epoch --json out.json
    PYTHONPATH=src python benchmarks/bench_fashion_epoch.py --threads 1,2 --repeats 7 --target-time 1

Prints the step and epoch times and the ratio fastest torch / normlab (> 1: normlab faster).
Without Fashion-MNIST installed, random images of the same shape are used (and said).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``normlab`` importable
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, _root)
    try:
        import normlab  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(_root, "src"))
    __package__ = "benchmarks"

import numpy as np
from normlab.kernels import _threads

from ._timing import FULL, QUICK, TimingConfig, machine_info, pinned_threads, time_interleaved, torch

__all__ = ["load_example", "build_torch", "build_torch_net", "make_cases", "bench_fashion_epoch", "main", "EPOCH_IMAGES"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "fashion_mnist_cnn.py")
EPOCH_IMAGES = 60000
#: timing of the full run: 5 repeats of ~2 s step loops after 2 warm-up steps
EPOCH_CFG = TimingConfig(repeats=5, target_s=2.0, warmup=2)
QUICK_CFG = TimingConfig(repeats=QUICK.repeats, target_s=QUICK.target_s, warmup=1, max_number=3, collect=False)


def load_example():
    """The example module ``examples/fashion_mnist_cnn.py`` (not a package: loaded from its path)."""
    name = "normlab_example_fashion_mnist_cnn"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _data(n: int, seed: int):
    """``(x, y, source)``: the first ``n`` Fashion-MNIST training images (N, 28, 28, 1), or random ones."""
    try:
        (x, y), _ = load_example().load_data(n_train=n, n_test=1)
        return np.ascontiguousarray(x), y, "Fashion-MNIST"
    except FileNotFoundError:
        rng = np.random.default_rng(seed)
        return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n), "random images (Fashion-MNIST not found)"


def build_torch(model, *, lr: float = 1e-3):
    """``(net, optimizer, loss)``: the torch twin of ``model`` (:func:`build_torch_net`), Adam, cross-entropy."""
    net = build_torch_net(model)
    return net, torch.optim.Adam(net.parameters(), lr=lr), torch.nn.CrossEntropyLoss()


def build_torch_net(model):
    """The torch twin of the example's normlab ``model`` (NCHW), with its weights copied."""
    nn = torch.nn
    mods, c_in, hw = [], 1, 28
    dense_layers = [l for l in model.layers if type(l).__name__ == "Dense"]
    pairs = []  # (torch module, normlab layer) with parameters
    pending_bn = None
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            m = nn.Conv2d(c_in, layer.filters, layer.kernel_size, padding=layer.kernel_size[0] // 2, bias=layer.use_bias)
            mods.append(m)
            pairs.append((m, layer))
            c_in = layer.filters
            pending_bn = nn.BatchNorm2d
        elif kind == "BatchNormalization":
            m = pending_bn(layer.params["gamma"].shape[0], eps=layer.epsilon, momentum=1.0 - layer.momentum)
            mods.append(m)
            pairs.append((m, layer))
        elif kind == "Activation":
            mods.append(nn.ReLU())
        elif kind == "MaxPooling2D":
            mods.append(nn.MaxPool2d(2))
            hw //= 2
        elif kind == "Flatten":
            mods.append(nn.Flatten())
        elif kind == "Dense":
            n_in = layer.params["kernel"].shape[0]
            m = nn.Linear(n_in, layer.params["kernel"].shape[1], bias=layer.use_bias)
            mods.append(m)
            pairs.append((m, layer))
            pending_bn = nn.BatchNorm1d
        elif kind == "Dropout":
            mods.append(nn.Dropout(layer.rate))
        elif kind in ("RandomFlip", "RandomTranslation"):
            raise ValueError("build_torch: time the network without augmentation")
        else:
            raise ValueError(f"build_torch: no torch twin for {kind}")
    net = nn.Sequential(*mods).float()
    _copy_weights(pairs, first_dense=dense_layers[0] if dense_layers else None, feat=(hw, hw, c_in))
    return net


def _copy_weights(pairs, first_dense, feat) -> None:
    h, w, c = feat
    with torch.no_grad():
        for m, layer in pairs:
            p = layer.params
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.from_numpy(np.ascontiguousarray(p["kernel"].transpose(3, 2, 0, 1))))
            elif isinstance(m, torch.nn.Linear):
                k = p["kernel"]
                if layer is first_dense:  # rows in NHWC flattening order (h, w, c) -> NCHW (c, h, w)
                    k = k.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
                m.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.T)))
            else:  # batch norm
                m.weight.copy_(torch.from_numpy(p["gamma"]))
                m.bias.copy_(torch.from_numpy(p["beta"]))
                m.running_mean.copy_(torch.from_numpy(layer.buffers["moving_mean"]))
                m.running_var.copy_(torch.from_numpy(layer.buffers["moving_variance"]))
            if getattr(m, "bias", None) is not None and "bias" in p:
                m.bias.copy_(torch.from_numpy(p["bias"]))


def _max_prob_diff(model, net, x) -> float:
    """Largest |softmax difference| of the two nets in inference mode on ``x`` (NHWC)."""
    p_nl = model.predict(x, batch_size=len(x))
    net.eval()
    with torch.no_grad():
        p_t = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))), dim=1).numpy()
    net.train()
    return float(np.abs(p_nl - p_t).max())


TORCH_VARIANTS = ("torch", "torch CL", "torch.compile")


def _torch_case(model, x, y, batch, nb, lr, variant):
    """One torch training step cycling through the batches: eager NCHW ("torch"), eager
    channels-last ("torch CL": net and inputs in ``torch.channels_last``) or ``torch.compile``."""
    net, opt, ce = build_torch(model, lr=lr)
    fmt = torch.channels_last if variant == "torch CL" else torch.contiguous_format
    if variant == "torch CL":
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if variant == "torch.compile" else net
    xt = [torch.from_numpy(np.ascontiguousarray(x[i * batch:(i + 1) * batch].transpose(0, 3, 1, 2)))
          .contiguous(memory_format=fmt) for i in range(nb)]
    yt = [torch.from_numpy(y[i * batch:(i + 1) * batch].astype(np.int64)) for i in range(nb)]
    it = [0]

    def step():
        i = it[0] % nb
        it[0] += 1
        opt.zero_grad()
        loss = ce(fwd(xt[i]), yt[i])
        loss.backward()
        opt.step()
        return loss

    return step, net


def load_example_rev(rev: str):
    """The example module built on the package as it was at git revision ``rev`` (``normlab_rev``)."""
    from .ab_train_step import load_revision

    nl = load_revision(rev)
    with open(EXAMPLE) as fh:
        text = fh.read().replace("import normlab\n", f"import {nl.__name__} as normlab\n")
    text = text.replace("from normlab.", f"from {nl.__name__}.")
    mod = type(sys)(f"normlab_example_rev_{rev}")
    mod.__file__ = EXAMPLE
    exec(compile(text, EXAMPLE, "exec"), mod.__dict__)
    return mod, nl


def make_cases(*, batch: int = 128, n_images: int = 2048, use_torch: bool = True, seed: int = 0, lr: float = 1e-3,
               data=None, torch_variants=TORCH_VARIANTS, gemm_variant: bool = False, pool_variant: bool = False,
               rev: str | None = None):
    """Return ``(callables, info, (model, x, y))``: one training step each, cycling through ``n_images``
    Fashion-MNIST images (or ``data = (x, y)``, channels-last).

    Cases: ``normlab`` (convolutions ``algorithm="auto"``), ``normlab gemm`` (every convolution
    forced to the exact GEMM path, if ``gemm_variant``), ``normlab one_pool`` (the step inside
    ``normlab.kernels._threads.one_pool()``: BLAS held on one thread, normlab's own threads at the
    limit; if ``pool_variant``) and the ``torch_variants`` that work here
    (a failure, e.g. ``torch.compile`` without a C++ compiler, is recorded in ``info``)."""
    from normlab.optimizers import Adam

    ex = load_example()
    if data is None:
        x, y, source = _data(max(n_images, batch), seed)
    else:
        x, y, source = np.ascontiguousarray(data[0][:n_images]), data[1][:n_images], "given arrays"
    nb = len(x) // batch
    models = {"normlab": ex.build_model(seed=seed, augment="none")}  # the example's network, no augmentation
    if gemm_variant:
        models["normlab gemm"] = ex.build_model(seed=seed, augment="none")
        for layer in models["normlab gemm"].layers:
            if type(layer).__name__ == "Conv2D":
                layer.algorithm = "gemm"
    if pool_variant:
        models["normlab one_pool"] = ex.build_model(seed=seed, augment="none")
    model = models["normlab"]
    for m in models.values():
        m.compile(optimizer=Adam(lr), loss="sparse_categorical_crossentropy")
    if rev:
        ex_rev, nl_rev = load_example_rev(rev)
        m = models[f"normlab @{rev}"] = ex_rev.build_model(seed=seed, augment="none")
        m.compile(optimizer=importlib.import_module(nl_rev.__name__ + ".optimizers").Adam(lr),
                  loss="sparse_categorical_crossentropy")
    info = {"data": source, "batch": batch, "n_batches": nb, "params": model.count_params(),
            "steps_per_epoch": -(-EPOCH_IMAGES // batch), "flops_per_step": step_flops(model, batch)}
    cases, torch_cases = {}, {}
    if use_torch and torch is not None:  # built first: from the weights before any step
        for variant in torch_variants:
            try:
                step, net = _torch_case(model, x, y, batch, nb, lr, variant)
                if variant == "torch":
                    info["max_prob_diff"] = _max_prob_diff(model, net, x[:256])
                info[f"loss_{variant}_first_step"] = float(step().detach())
            except Exception as exc:  # torch.compile needs a working inductor (C++ compiler)
                info[f"{variant} failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                continue
            torch_cases[variant] = step
    for name, m in models.items():
        xp, yp = m._prepare_xy(x, y, "bench")  # what fit does once
        m._prepare_training()
        xs = [xp[i * batch:(i + 1) * batch] for i in range(nb)]
        ys = [yp[i * batch:(i + 1) * batch] for i in range(nb)]

        def normlab_step(m=m, xs=xs, ys=ys, it=[0], pool=name.endswith("one_pool")):
            i = it[0] % nb
            it[0] += 1
            if pool:
                with _threads.one_pool():
                    return m._train_step(xs[i], ys[i])
            return m._train_step(xs[i], ys[i])

        info[f"loss_{name}_first_step"] = float(normlab_step()[0])
        cases[name] = normlab_step
    cases.update(torch_cases)
    return cases, info, (model, x, y)


def step_flops(model, batch: int, input_shape=(28, 28, 1)) -> float:
    """Multiply-adds x 2 of one training step's convolutions and dense layers: forward, kernel
    gradient and input gradient (not for the first layer, whose input gradient is not computed)."""
    total, first, shape = 0.0, True, (batch,) + tuple(input_shape)
    for layer in model.layers:
        out = layer.compute_output_shape(shape)
        if type(layer).__name__ in ("Conv2D", "Dense"):
            positions = int(np.prod(out[:-1]))  # batch x output pixels
            total += 2.0 * positions * int(np.prod(layer.params["kernel"].shape)) * (2 if first else 3)
            first = False
        shape = out
    return total


def gemm_rate(threads: int, repeats: int = 5) -> dict:
    """float32 GEMM rate of NumPy's BLAS at the pinned thread count (GFLOP/s, medians): the
    im2col shape of the network's largest convolution, (6272 x 576) @ (576 x 64), and a
    large square product (the practical peak); with one thread on the thread's CPU time."""
    clock = time.thread_time if threads == 1 else time.perf_counter
    out = {}
    rng = np.random.default_rng(0)
    for name, (m, k, n) in {"im2col 6272x576x64": (6272, 576, 64), "square 2048": (2048, 2048, 2048)}.items():
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        np.matmul(a, b, out=c)
        ts = []
        for _ in range(repeats):
            t0 = clock()
            np.matmul(a, b, out=c)
            ts.append(clock() - t0)
        out[name] = 2.0 * m * k * n / statistics.median(ts) / 1e9
    return out


def thread_cpu_times(cases: dict, repeats: int) -> dict:
    """CPU time of the calling thread for single calls, interleaved (order alternating)."""
    out = {k: [] for k in cases}
    names = list(cases)
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            t0 = time.thread_time()
            cases[k]()
            out[k].append(time.thread_time() - t0)
    return out


def _full_epoch(model, net_parts, x, y, batch, seed) -> dict:
    """One real epoch of each (on ``x``): normlab ``fit(epochs=1)``; torch over shuffled batches."""
    out = {}
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, seed=seed)
    out["normlab_epoch_s"] = time.perf_counter() - t0
    if net_parts is not None:
        net, opt, ce = net_parts
        perm = np.random.default_rng(seed).permutation(len(x))
        t0 = time.perf_counter()
        xt = torch.from_numpy(np.ascontiguousarray(x[perm].transpose(0, 3, 1, 2)))
        yt = torch.from_numpy(y[perm].astype(np.int64))
        for lo in range(0, len(x), batch):
            opt.zero_grad()
            ce(net(xt[lo:lo + batch]), yt[lo:lo + batch]).backward()
            opt.step()
        out["torch_epoch_s"] = time.perf_counter() - t0
    return out


def bench_fashion_epoch(
    *,
    threads: int = 1,
    batch: int = 128,
    n_images: int = 2048,
    cfg: TimingConfig = EPOCH_CFG,
    use_torch: bool = True,
    cpu_clock: bool | None = None,
    full_epoch: bool = False,
    seed: int = 0,
    data=None,
    torch_variants=TORCH_VARIANTS,
    gemm_variant: bool = False,
    pool_variant: bool = False,
    rev: str | None = None,
) -> dict:
    """Time the training steps at ``threads`` threads; returns a JSON-ready dict.

    Also measures NumPy's float32 GEMM rate at that thread count (:func:`gemm_rate`) and
    the step's floor at that rate (its convolution and dense FLOPs / rate)."""
    use_torch = bool(use_torch and torch is not None)
    if cpu_clock is None:
        cpu_clock = threads == 1
    res = {
        "meta": {
            "threads": threads, "batch": batch, "timing": cfg.as_dict(), "machine": machine_info(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "loadavg_before": _loadavg(),
            "ratio": "fastest torch variant's time / normlab_time (> 1 means normlab is faster)",
            "epoch": f"extrapolated: median step time x ceil({EPOCH_IMAGES} / batch) steps",
        }
    }
    with pinned_threads(threads):
        cases, info, (model, x, y) = make_cases(batch=batch, n_images=n_images, use_torch=use_torch, seed=seed,
                                                data=data, torch_variants=torch_variants, gemm_variant=gemm_variant,
                                                pool_variant=pool_variant, rev=rev)
        res["info"] = info
        rates = gemm_rate(threads)
        res["gemm_gflops"] = rates
        res["floor_s"] = {k: info["flops_per_step"] / (r * 1e9) for k, r in rates.items()}
        t = time_interleaved(cases, cfg)
        steps = info["steps_per_epoch"]
        rows = {}
        for k, v in t.items():
            rows[k] = {"step_s": v["median_s"], "step_min_s": v["min_s"], "step_max_s": v["max_s"],
                       "steps_per_repeat": v["number"], "repeats": v["repeats"], "epoch_s": v["median_s"] * steps,
                       "per_step_s": v["per_call_s"]}
        if cpu_clock:
            cpu = thread_cpu_times(cases, repeats=max(5, 2 * cfg.repeats + 1))
            for k, v in cpu.items():
                rows[k]["cpu_step_s"] = statistics.median(v)
                rows[k]["cpu_epoch_s"] = statistics.median(v) * steps
        res["rows"] = rows
        torches = [k for k in rows if k.startswith("torch")]
        if torches:
            best = min(torches, key=lambda k: rows[k]["step_s"])
            res["fastest_torch"] = best
            res["ratio"] = rows[best]["step_s"] / rows["normlab"]["step_s"]
            res["ratios"] = {k: rows[k]["step_s"] / rows["normlab"]["step_s"] for k in torches}
            if cpu_clock:
                res["cpu_ratio"] = min(rows[k]["cpu_step_s"] for k in torches) / rows["normlab"]["cpu_step_s"]
        if full_epoch:
            xe, ye, _ = _data(EPOCH_IMAGES, seed)
            parts = build_torch(model) if use_torch else None
            res["full_epoch"] = _full_epoch(model, parts, xe, ye, batch, seed)
    res["meta"]["loadavg_after"] = _loadavg()
    return res


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def format_text(res: dict) -> str:
    m, info, rows = res["meta"], res["info"], res["rows"]
    lines = [
        f"Fashion-MNIST CNN ({info['params']} parameters), one training step of {m['batch']} images, "
        f"Adam; {m['threads']} thread(s); data: {info['data']}",
        f"{m['machine']['cpu']}, numpy {m['machine']['numpy']}, torch {m['machine']['torch']}; "
        f"load average before {m['loadavg_before']}, after {m['loadavg_after']}",
    ]
    if "max_prob_diff" in info:
        lines.append(f"same function: max |softmax difference| {info['max_prob_diff']:.2e}; first-step losses "
                     + ", ".join(f"{k[5:-11]} {v:.4f}" for k, v in info.items() if k.startswith("loss_"))
                     + " (dropout masks differ)")
    for k, v in info.items():
        if k.endswith(" failed"):
            lines.append(f"{k}: {v}")
    steps = info["steps_per_epoch"]
    lines.append(f"{'':16s} {'step (ms)':>10s} {'min':>8s} {'max':>8s} {'epoch (s)':>10s}  {'vs normlab':>10s}"
                 f"   epoch = {steps} steps (extrapolated)")
    base = rows["normlab"]["step_s"]
    for k, r in rows.items():
        lines.append(f"{k:16s} {r['step_s'] * 1e3:10.1f} {r['step_min_s'] * 1e3:8.1f} {r['step_max_s'] * 1e3:8.1f} "
                     f"{r['epoch_s']:10.1f}  {r['step_s'] / base:10.2f}")
    if "floor_s" in res:
        gf = info["flops_per_step"] / 1e9
        lines.append(f"GEMM floor: {gf:.2f} GFLOP per step (convolutions and dense, forward and both gradients); "
                     + "; ".join(f"at the {k} rate {res['gemm_gflops'][k]:.0f} GFLOP/s: {v * 1e3:.1f} ms"
                                 for k, v in res["floor_s"].items()))
    if "ratio" in res:
        lines.append(f"ratio fastest torch ({res['fastest_torch']}) / normlab (wall clock, medians): {res['ratio']:.2f}")
    if "cpu_ratio" in res:
        lines.append("thread CPU time, medians of single steps: " + ", ".join(
            f"{k} {r['cpu_step_s'] * 1e3:.1f} ms" for k, r in rows.items()))
        lines.append(f"ratio fastest torch / normlab (thread CPU time): {res['cpu_ratio']:.2f}")
    if "full_epoch" in res:
        fe = res["full_epoch"]
        s = f"one real epoch (60000 images): normlab fit {fe['normlab_epoch_s']:.1f} s"
        if "torch_epoch_s" in fe:
            s += f", torch {fe['torch_epoch_s']:.1f} s, ratio {fe['torch_epoch_s'] / fe['normlab_epoch_s']:.2f}"
        lines.append(s)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/bench_fashion_epoch.py", description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1",
                   help="threads for numpy's BLAS and torch; a list such as 1,2 runs each in turn (default 1)")
    p.add_argument("--torch-variants", default=",".join(TORCH_VARIANTS),
                   help=f"comma-separated subset of {', '.join(TORCH_VARIANTS)} (default all)")
    p.add_argument("--no-gemm-variant", action="store_true", help="skip the 'normlab gemm' case")
    p.add_argument("--one-pool", action="store_true",
                   help="add the 'normlab one_pool' case: the step inside _threads.one_pool() (BLAS on one thread)")
    p.add_argument("--rev", help="also time the package as it was at this git revision (before / after)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="smoke run: a few steps on small batches (numbers mean nothing)")
    p.add_argument("--repeats", type=int, help=f"timed repeats (default {EPOCH_CFG.repeats})")
    p.add_argument("--target-time", type=float, help=f"seconds per repeat (default {EPOCH_CFG.target_s})")
    p.add_argument("--full-epoch", action="store_true", help="also run one real epoch of each, once")
    p.add_argument("--no-torch", action="store_true", help="time normlab alone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the results (all repeats) as JSON")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    threads = [int(t) for t in str(args.threads).split(",")]
    if min(threads) < 1:
        raise SystemExit("--threads must be >= 1")
    base = QUICK_CFG if args.quick else EPOCH_CFG
    cfg = TimingConfig(repeats=args.repeats or base.repeats, target_s=args.target_time or base.target_s,
                       warmup=base.warmup, max_number=base.max_number, collect=base.collect)
    batch = min(args.batch_size, 16) if args.quick else args.batch_size
    variants = tuple(v for v in args.torch_variants.split(",") if v)
    argv_list = sys.argv[1:] if argv is None else list(argv)
    out = {}
    for t in threads:
        res = bench_fashion_epoch(
            threads=t, batch=batch, n_images=4 * batch if args.quick else 2048, cfg=cfg,
            use_torch=not args.no_torch, full_epoch=args.full_epoch and not args.quick, seed=args.seed,
            torch_variants=variants, gemm_variant=not args.no_gemm_variant, pool_variant=args.one_pool,
            rev=args.rev,
        )
        res["meta"]["command"] = "PYTHONPATH=src python benchmarks/bench_fashion_epoch.py " + " ".join(argv_list)
        print(format_text(res), flush=True)
        out[str(t)] = res
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out if len(out) > 1 else out[str(threads[0])], fh, indent=1)
    return out if len(out) > 1 else out[str(threads[0])]


if __name__ == "__main__":
    main()
