"""Cold start: from a new process to the end of the first training step of the BN paper's network.

Each measurement starts a fresh Python process that imports its library,
builds the 784-100-100-100-10 sigmoid network (batch norm in every hidden
layer), takes one SGD step on a batch of 60 and prints the wall-clock time
(``time.time()``) at the end of that step; the time reported is that minus
the parent's clock just before it started the process, so the interpreter's
start, the imports, any compilation and the step all count.

* ``normlab cold``: numba's cache in a new empty folder (``NUMBA_CACHE_DIR``),
  as on the first run after installing or in a fresh container;
* ``normlab warm``: the same folder again, filled by the cold run;
* ``normlab after warmup`` (``warmup=True``): ``normlab warmup`` run first into
  an empty folder, then the step; ``warmup_s`` is the command's own time;
* ``torch``: eager PyTorch, same network;
* ``torch.compile`` and ``jax.jit``: the same step compiled (where installed).

The candidates run in turn, round by round (the order reversed every other
round), at the thread count of the parent's limit (``threads``), and the
median over the rounds is reported. Whether the cold and the warm runs give
the same loss, bit for bit, is recorded as ``same_loss_cold_warm``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

__all__ = ["bench_cold_start", "CANDIDATES"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_NORMLAB = """
import numpy as np
import normlab
from normlab.layers import Activation, BatchNormalization, Dense
from normlab.optimizers import SGD
layers = []
for _ in range(3):
    layers += [Dense(100, use_bias=False), BatchNormalization(), Activation("sigmoid")]
model = normlab.Sequential(layers + [Dense(10, activation="softmax")])
model.build((None, 784), seed=0)
model.compile(optimizer=SGD(learning_rate=0.01), loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.random((60, 784), dtype=np.float32)
y = rng.integers(0, 10, 60)
loss = float(model.train_on_batch(x, y))
"""

_TORCH = """
import torch
nn = torch.nn
mods = []
for n_in in (784, 100, 100):
    mods += [nn.Linear(n_in, 100, bias=False), nn.BatchNorm1d(100, eps=1e-3, momentum=0.01), nn.Sigmoid()]
net = nn.Sequential(*mods, nn.Linear(100, 10))
if COMPILE:
    net = torch.compile(net)
opt = torch.optim.SGD(net.parameters(), lr=0.01)
g = torch.Generator().manual_seed(0)
x = torch.rand(60, 784, generator=g)
y = torch.randint(0, 10, (60,), generator=g)
opt.zero_grad()
out = nn.functional.cross_entropy(net(x), y)
out.backward()
opt.step()
loss = float(out)
"""

_JAX = """
import jax, jax.numpy as jnp
key = jax.random.PRNGKey(0)
sizes = (784, 100, 100, 100, 10)
params = []
for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, k = jax.random.split(key)
    params.append({"w": jax.random.normal(k, (a, b)) * 0.05, "g": jnp.ones(b), "b": jnp.zeros(b)})
def loss_fn(params, x, y):
    h = x
    for p in params[:-1]:
        z = h @ p["w"]
        z = (z - z.mean(0)) * jax.lax.rsqrt(z.var(0) + 1e-3) * p["g"] + p["b"]
        h = jax.nn.sigmoid(z)
    logits = h @ params[-1]["w"] + params[-1]["b"]
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1).mean()
@jax.jit
def step(params, x, y):
    loss, g = jax.value_and_grad(loss_fn)(params, x, y)
    return jax.tree_util.tree_map(lambda p, d: p - 0.01 * d, params, g), loss
key, kx, ky = jax.random.split(key, 3)
x = jax.random.uniform(kx, (60, 784))
y = jax.random.randint(ky, (60,), 0, 10)
params, out = step(params, x, y)
loss = float(out)
"""

_END = "\nimport time as _t\nprint('NORMLAB_COLD', _t.time(), repr(loss), flush=True)\n"

#: every candidate, in the order of the table
CANDIDATES = ("normlab_cold", "normlab_warm", "normlab_after_warmup", "torch", "torch_compile", "jax_jit")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _env(threads: int, cache_dir: str | None) -> dict:
    env = dict(os.environ)
    try:  # the normlab this process runs, wherever it was found
        import normlab

        src = os.path.dirname(os.path.dirname(os.path.abspath(normlab.__file__)))
    except ImportError:  # pragma: no cover
        src = os.path.join(_ROOT, "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


def _run(code: str, env: dict, timeout: float) -> tuple[float, str]:
    """Seconds from starting ``python -c code`` to its marker line, and the loss it printed."""
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", code + _END], env=env, capture_output=True, text=True,
                          timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("NORMLAB_COLD "):
            _, stamp, loss = line.split(" ", 2)
            return float(stamp) - start, loss
    raise RuntimeError(f"cold-start run failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")


def _warmup(env: dict, timeout: float) -> float:
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "normlab", "warmup"], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"normlab warmup failed: {proc.stderr.strip()[-800:]}")
    return time.time() - start


def bench_cold_start(rounds: int = 3, threads: int = 1, *, peers=("torch", "compile", "jax"), warmup: bool = False,
                     timeout: float = 600.0) -> dict:
    """Medians over ``rounds`` of each candidate's time to the end of its first step (seconds)."""
    names = ["normlab_cold", "normlab_warm"]
    if warmup:
        names.append("normlab_after_warmup")
    if "torch" in peers and _installed("torch"):
        names.append("torch")
        if "compile" in peers:
            names.append("torch_compile")
    if "jax" in peers and _installed("jax"):
        names.append("jax_jit")
    samples = {k: [] for k in names}
    losses = {k: [] for k in names}
    warmup_s = []
    for r in range(rounds):
        cache = tempfile.mkdtemp(prefix="normlab-cold-")
        try:
            # the warm run needs the cold run's cache: the pair keeps its order
            order = names if r % 2 == 0 else names[::-1]
            order = [k for k in order if k != "normlab_warm"]
            order.insert(order.index("normlab_cold") + 1, "normlab_warm")
            for name in order:
                if name in ("normlab_cold", "normlab_warm"):
                    t, loss = _run(_NORMLAB, _env(threads, cache), timeout)
                elif name == "normlab_after_warmup":
                    fresh = tempfile.mkdtemp(prefix="normlab-warmup-")
                    try:
                        warmup_s.append(_warmup(_env(threads, fresh), timeout))
                        t, loss = _run(_NORMLAB, _env(threads, fresh), timeout)
                    finally:
                        shutil.rmtree(fresh, ignore_errors=True)
                elif name == "jax_jit":
                    t, loss = _run(_JAX, _env(threads, None), timeout)
                else:
                    code = f"COMPILE = {name == 'torch_compile'}\ntorch_threads = {threads}\n" + _TORCH.replace(
                        "import torch\n", f"import torch\ntorch.set_num_threads({threads})\n", 1)
                    t, loss = _run(code, _env(threads, None), timeout)
                samples[name].append(t)
                losses[name].append(loss)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    out = {
        "rounds": rounds,
        "threads": threads,
        "median_s": {k: statistics.median(v) for k, v in samples.items()},
        "samples_s": samples,
        "same_loss_cold_warm": losses["normlab_cold"] == losses["normlab_warm"],
        "loss_normlab": losses["normlab_cold"][0] if losses["normlab_cold"] else None,
    }
    if warmup_s:
        out["warmup_s"] = statistics.median(warmup_s)
        out["same_loss_after_warmup"] = losses["normlab_after_warmup"] == losses["normlab_cold"]
    return out
