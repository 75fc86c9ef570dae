"""``normlab warmup``: compile the numba kernels once, on every core, before the first real run.

numba compiles each kernel on its first call and keeps the machine code in
its cache, so only the first run after installing (or every run in a fresh
container, whose cache starts empty) waits for the compiler: several seconds
for a first training step that later takes a fraction of one. This command
does that wait up front and in parallel: it trains a few steps of small
networks that together call the kernels of normlab's common models (the BN
paper's sigmoid MLP with SGD, a ReLU MLP with Adam, the convolutional network
of ``examples/fashion_mnist_cnn.py``, layer and group normalization), each
network in a process of its own, so that a 2-core machine compiles about
twice as fast as the first run of one script would.

The compiled code is the same whichever process compiles it: a run after
``normlab warmup`` gives the same numbers, bit for bit, as one that compiled
its kernels itself. Without numba (or with ``NORMLAB_DISABLE_NUMBA=1``)
there is nothing to compile and the command says so.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from ._common import add_command, positive_int

#: the warm-up networks, in the order they are handed out (most compilation first)
TASKS = ("cnn", "mlp_sigmoid", "mlp_relu", "norms")


def _mlp(bn_activation: str, optimizer):
    import numpy as np

    import normlab
    from normlab.layers import Activation, BatchNormalization, Dense

    layers = []
    for _ in range(3):
        layers += [Dense(16, use_bias=False), BatchNormalization(), Activation(bn_activation)]
    model = normlab.Sequential(layers + [Dense(10, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 784)).astype(np.float32)
    y = rng.integers(0, 10, 60)
    model.fit(x, y, batch_size=30, epochs=1, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)


def _cnn():
    import numpy as np

    import normlab
    from normlab.layers import (Activation, BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPooling2D)
    from normlab.optimizers import Adam

    def block(filters):
        return [Conv2D(filters, 3, padding="same", use_bias=False), BatchNormalization(), Activation("relu")]

    model = normlab.Sequential(
        # 8 -> 32 channels and 32 -> 32: the layers where Conv2D's "auto" picks Winograd (and its kernels compile)
        [normlab.Input((28, 28, 1))] + block(8) + [MaxPooling2D(2)] + block(32) + block(32) + [MaxPooling2D(2)]
        + [Flatten(), Dense(16, use_bias=False), BatchNormalization(), Activation("relu"), Dropout(0.3),
           Dense(10, activation="softmax")]
    )
    from normlab.losses import SparseCategoricalCrossentropy

    model.compile(optimizer=Adam(1e-3), loss=SparseCategoricalCrossentropy(), metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.evaluate(x, y, verbose=0)


def _norms():
    import numpy as np

    import normlab
    from normlab.layers import Dense, GroupNormalization, LayerNormalization
    from normlab.optimizers import SGD

    model = normlab.Sequential([normlab.Input((32,)), Dense(32), LayerNormalization(), Dense(32),
                                GroupNormalization(groups=4), Dense(10, activation="softmax")])
    model.compile(optimizer=SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((32, 32)).astype(np.float32), rng.integers(0, 10, 32), batch_size=16,
              epochs=1, verbose=0)


def run_task(name: str) -> tuple[str, int, float]:
    """Run one warm-up network; returns ``(name, kernels compiled, seconds)``."""
    from ..kernels._compile_notice import CompileWatch, compile_notice

    start = time.perf_counter()
    watch = CompileWatch()
    with compile_notice(stream=_Null()) as watch:
        if name == "cnn":
            _cnn()
        elif name == "mlp_sigmoid":
            from normlab.optimizers import SGD

            _mlp("sigmoid", SGD(0.01))
        elif name == "mlp_relu":
            from normlab.optimizers import Adam

            _mlp("relu", Adam(1e-3))
        elif name == "norms":
            _norms()
        else:  # pragma: no cover - names come from TASKS
            raise ValueError(f"normlab warmup: unknown network {name!r}")
    return name, watch.compiled, time.perf_counter() - start


class _Null:
    def write(self, text):
        return len(text)

    def flush(self):
        pass


def warm_up_kernels(jobs: int | None = None, tasks=TASKS) -> dict:
    """Compile (or load from numba's cache) the kernels of the warm-up networks, ``jobs`` processes at once.

    Returns ``{"seconds": wall time, "compiled": kernels compiled, "tasks": {name: (compiled, seconds)}}``.
    """
    from ..kernels import _threads
    from ..kernels._backend import numba_enabled

    if not numba_enabled():
        return {"seconds": 0.0, "compiled": 0, "tasks": {}}
    jobs = max(1, min(len(tasks), jobs or _threads.get_num_threads()))
    start = time.perf_counter()
    if jobs == 1:
        results = [run_task(t) for t in tasks]
    else:
        # fork where there is one: the children start with normlab already imported
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ctx.Pool(jobs) as pool:
            results = pool.map(run_task, tasks, chunksize=1)
    return {"seconds": time.perf_counter() - start, "compiled": sum(r[1] for r in results),
            "tasks": {r[0]: (r[1], r[2]) for r in results}}


def _network(name: str) -> str:
    # a type rather than choices=: argparse checks an empty nargs="*" list against choices
    if name not in TASKS:
        raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {', '.join(TASKS)})")
    return name


def add_parser(sub) -> None:
    p = add_command(sub, "warmup", help="compile the numba kernels now, on every core (once after installing)",
                    description=__doc__)
    p.add_argument("networks", nargs="*", type=_network, metavar="NETWORK",
                   help=f"only these warm-up networks (default: all of {', '.join(TASKS)})")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="processes compiling at once (default: the thread limit, see normlab.set_num_threads)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from ..kernels._backend import numba_enabled

    if not numba_enabled():
        print("normlab warmup: the numba kernels are off (not installed, or NORMLAB_DISABLE_NUMBA=1): "
              "nothing to compile")
        return 0
    print("normlab warmup: compiling numba kernels...", end="", flush=True)
    result = warm_up_kernels(args.jobs, tuple(dict.fromkeys(args.networks)) or TASKS)
    if result["compiled"]:
        print(f" {result['compiled']} compiled in {result['seconds']:.1f} s (later runs load them from the cache)")
    else:
        print(f" all already in the cache ({result['seconds']:.1f} s)")
    sys.stdout.flush()
    return 0
