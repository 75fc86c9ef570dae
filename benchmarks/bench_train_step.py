"""One SGD training step of the BN paper's MNIST network: normlab vs PyTorch eager.

Network (Ioffe & Szegedy 2015, section 4.1): 784-100-100-100-10, sigmoid
hidden units, softmax output with cross-entropy, plain SGD (lr 0.01).

* ``bn`` variant: each hidden layer is ``Dense(100, use_bias=False) ->
  BatchNormalization() -> Activation("sigmoid")``; torch: ``nn.Linear(bias=False)
  -> nn.BatchNorm1d(100, eps=1e-3, momentum=0.01) -> nn.Sigmoid``.
* ``plain`` variant: ``Dense(100, activation="sigmoid")``; torch:
  ``nn.Linear -> nn.Sigmoid``.

Output: normlab ``Dense(10, activation="softmax")`` with loss
``"sparse_categorical_crossentropy"`` (differentiated through the logits in
one fused step); torch ``nn.Linear(100, 10)`` and ``nn.CrossEntropyLoss`` on
the logits.

Timed, per step, on the same float32 batch every call:

* ``normlab train_on_batch``: the public API (validates and prepares ``x``
  and ``y`` on every call, then steps);
* ``normlab _train_step``: the internal step ``fit`` runs per batch (inputs
  already validated and prepared once);
* ``normlab functional _train_step``: the same network and weights built as a
  functional ``Model`` (``functional / Sequential`` is its time over the
  Sequential's: both run the same executor);
* ``torch``: ``opt.zero_grad(); loss = ce(net(x), y); loss.backward(); opt.step()``;
* ``torch.compile`` (peer ``compile``): the same step on ``torch.compile(net)``
  (forward and backward compiled by inductor; the optimizer step eager), the
  way the PyTorch tutorials compile a training loop;
* ``jax.jit`` (peer ``jax``): the whole step (forward, ``value_and_grad``,
  SGD update, moving statistics) as one jitted function of the same weights,
  parameters donated, ``block_until_ready`` on the loss;
* ``matrix products``: only the matrix products of one normlab step (forward
  ``h @ W`` per Dense layer, backward ``h.T @ dz`` per layer and ``dz @ W.T``
  for all but the first), with ``np.matmul(..., out=)`` into preallocated
  arrays, on the model's own kernels. Nothing else of a step is done, so
  ``torch / matrix products`` (``ratio_ceiling``) is the ratio normlab would
  reach if everything but these products cost nothing: the ceiling that the
  BLAS library (OpenBLAS in NumPy's wheels) sets at large batches.

Before timing, the torch net gets a copy of the normlab weights; one step is
taken on each side and two checks that both compute the same thing are
recorded: the first-step losses (``loss_normlab``, ``loss_torch``) and
``grad_rel_err``, the largest relative difference between the two sets of
gradients of that step (max over parameters of ``|g_nl - g_torch|_inf /
|g_torch|_inf``; ~1e-6 to 1e-4 in float32 when they agree). A step that
leaves out part of the backward pass would be timed as faster than it is;
the table flags ``grad_rel_err > GRAD_TOL``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._peers import jax_module
from ._timing import FULL, TimingConfig, time_interleaved, torch

__all__ = ["BATCHES", "ARCH", "build_normlab", "build_torch", "make_cases", "bench_train_step"]

BATCHES = (60, 256, 1024)
ARCH = (784, 100, 100, 100, 10)
LEARNING_RATE = 0.01
GRAD_TOL = 1e-3


def build_normlab(bn: bool, *, lr: float = LEARNING_RATE, seed: int = 0, functional: bool = False):
    """The network as a Sequential model, or (``functional``) as the same functional Model with the same weights."""
    import normlab
    from normlab.layers import Activation, BatchNormalization, Dense
    from normlab.optimizers import SGD

    def layers():
        out = []
        for units in ARCH[1:-1]:
            if bn:
                out += [Dense(units, use_bias=False), BatchNormalization(), Activation("sigmoid")]
            else:
                out.append(Dense(units, activation="sigmoid"))
        return out + [Dense(ARCH[-1], activation="softmax")]

    model = normlab.Sequential(layers(), name=f"mnist_{'bn' if bn else 'plain'}")
    model.build((None, ARCH[0]), seed=seed)
    if functional:
        h = inp = normlab.Input((ARCH[0],))
        for layer in layers():
            h = layer(h)
        graph = normlab.Model(inp, h, name=model.name + "_functional")
        graph.set_weights(model.get_weights())
        model = graph
    model.compile(optimizer=SGD(learning_rate=lr, momentum=0.0), loss="sparse_categorical_crossentropy")
    return model


def build_torch(bn: bool, normlab_model=None, *, lr: float = LEARNING_RATE):
    """The equivalent torch net; copies the normlab weights when ``normlab_model`` is given."""
    nn = torch.nn
    mods = []
    for n_in, units in zip(ARCH[:-2], ARCH[1:-1]):
        if bn:
            mods += [nn.Linear(n_in, units, bias=False), nn.BatchNorm1d(units, eps=1e-3, momentum=0.01), nn.Sigmoid()]
        else:
            mods += [nn.Linear(n_in, units), nn.Sigmoid()]
    mods.append(nn.Linear(ARCH[-2], ARCH[-1]))
    net = nn.Sequential(*mods).float()
    if normlab_model is not None:
        _copy_weights(normlab_model, net)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    return net, opt, nn.CrossEntropyLoss()


def build_jax(bn: bool, model, *, lr: float = LEARNING_RATE):
    """The network as one jitted jax step ``step(params, state, x, y) -> (params, state, loss)``, from ``model``'s weights."""
    jax = jax_module()
    jnp = jax.numpy
    layers = [l for l in model.layers if l.params]
    params, state = [], []
    for l in layers:
        params.append({k: jnp.asarray(v) for k, v in l.params.items()})
        if "gamma" in l.params:
            state.append((jnp.asarray(l.buffers["moving_mean"]), jnp.asarray(l.buffers["moving_variance"])))

    def loss_fn(params, state, x, y):
        h, new_state, k = x, [], 0
        for p in params[:-1]:
            if "kernel" in p:
                h = h @ p["kernel"]
                if "bias" in p:
                    h = jax.nn.sigmoid(h + p["bias"])
            else:  # batch norm, then the sigmoid of its Activation layer
                mean = h.mean(axis=0)
                var = h.var(axis=0)
                h = jax.nn.sigmoid((h - mean) * jax.lax.rsqrt(var + 1e-3) * p["gamma"] + p["beta"])
                mm, mv = state[k]
                new_state.append((0.99 * mm + 0.01 * mean, 0.99 * mv + 0.01 * var))
                k += 1
        logits = h @ params[-1]["kernel"] + params[-1]["bias"]
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, y[:, None], axis=1).mean(), new_state

    def step(params, state, x, y):
        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        return params, new_state, loss

    return jax.jit(step, donate_argnums=(0, 1)), params, state


def _copy_weights(model, net) -> None:
    tmods = [m for m in net if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d))]
    nmods = [l for l in model.layers if l.params]
    assert len(tmods) == len(nmods), (tmods, nmods)
    with torch.no_grad():
        for t, l in zip(tmods, nmods):
            if isinstance(t, torch.nn.Linear):
                t.weight.copy_(torch.from_numpy(np.ascontiguousarray(l.params["kernel"].T)))
                if t.bias is not None:
                    t.bias.copy_(torch.from_numpy(l.params["bias"]))
            else:
                t.weight.copy_(torch.from_numpy(l.params["gamma"]))
                t.bias.copy_(torch.from_numpy(l.params["beta"]))


def _normlab_grads(model) -> list[np.ndarray]:
    """normlab's gradients of the last step, in torch's parameter order and layout."""
    out = []
    for l in model.layers:
        for k in ("kernel", "bias", "gamma", "beta"):
            if k in l.grads:
                g = l.grads[k]
                out.append(g.T if k == "kernel" else g)
    return out


def _torch_params(net) -> list:
    return [p for m in net if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d)) for p in (m.weight, m.bias) if p is not None]


def _grad_rel_err(model, net) -> float:
    """max over parameters of ``|g_normlab - g_torch|_inf / |g_torch|_inf`` after one step each."""
    errs = []
    nl = _normlab_grads(model)
    tp = _torch_params(net)
    if len(nl) != len(tp):
        return float("inf")
    for g, p in zip(nl, tp):
        gt = p.grad.detach().numpy() if p.grad is not None else np.zeros(g.shape, np.float32)
        scale = float(np.abs(gt).max())
        diff = float(np.abs(g - gt).max())
        errs.append(diff / scale if scale > 0 else diff)
    return max(errs)


def make_data(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, ARCH[0]), dtype=np.float32)  # MNIST-like pixels in [0, 1)
    y = rng.integers(0, ARCH[-1], size=batch)
    return x, y


def _torch_compile_case(bn, model, x, y, info):
    net, opt, ce = build_torch(bn, model)
    cnet = torch.compile(net)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def step():
        opt.zero_grad()
        loss = ce(cnet(xt), yt)
        loss.backward()
        opt.step()
        return loss

    info["loss_torch_compile"] = float(step().detach())  # compiles
    return step


def _jax_case(bn, model, x, y, info):
    jax = jax_module()
    step, params, state = build_jax(bn, model)
    xj, yj = jax.numpy.asarray(x), jax.numpy.asarray(y.astype(np.int32))
    box = [params, state]

    def run():
        box[0], box[1], loss = step(box[0], box[1], xj, yj)
        return loss.block_until_ready()

    info["loss_jax"] = float(run())  # compiles
    return run


def make_cases(batch: int, bn: bool, *, use_torch: bool = True, seed: int = 0, peers=()) -> tuple[dict, dict]:
    """Return ``(callables, info)``; ``info`` holds the first-step losses.

    ``peers``: any of ``"compile"`` (torch.compile) and ``"jax"`` (jax.jit), where installed.
    """
    x, y = make_data(batch, seed)
    model = build_normlab(bn, seed=seed)
    info = {}
    cases = {}
    # the peers start from the weights before normlab's first step
    if "compile" in peers and use_torch and torch is not None and hasattr(torch, "compile"):
        cases["torch_compile"] = _torch_compile_case(bn, model, x, y, info)
    if "jax" in peers and jax_module() is not None:
        cases["jax_jit"] = _jax_case(bn, model, x, y, info)
    if use_torch and torch is not None:
        net, opt, ce = build_torch(bn, model)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

        def torch_step():
            opt.zero_grad()
            loss = ce(net(xt), yt)
            loss.backward()
            opt.step()
            return loss

        info["loss_torch"] = float(torch_step().detach())
    info["loss_normlab"] = float(model.train_on_batch(x, y))
    if "loss_torch" in info:
        info["grad_rel_err"] = _grad_rel_err(model, net)
    # what fit() does once per epoch, then _train_step per batch
    xp, yp = model._prepare_xy(x, y, "bench")
    model._prepare_training()

    # the same network and weights as a functional Model: the same executor, so the same speed
    graph = build_normlab(bn, seed=seed, functional=True)
    graph.train_on_batch(x, y)
    graph._prepare_training()

    cases["normlab_train_on_batch"] = lambda: model.train_on_batch(x, y)
    cases["normlab_train_step"] = lambda: model._train_step(xp, yp)
    cases["normlab_functional_train_step"] = lambda: graph._train_step(xp, yp)
    cases["matrix_products"] = _matrix_products(model, xp)
    if "loss_torch" in info:
        cases["torch"] = torch_step
    return cases, info


def product_operands(model, x):
    """The operands of one training step's matrix products of the Dense chain ``model`` on ``x``.

    Returns ``(kernels, ins, outs, dzs, grads, dxs)``: per Dense layer its kernel, its input
    (``x`` for the first, random values of the right shape after), and arrays for ``x W``,
    the upstream gradient, ``dW`` and ``dx``.
    """
    kernels = [l.params["kernel"] for l in model.layers if "kernel" in l.params]
    rng = np.random.default_rng(1)
    n = x.shape[0]
    ins = [x] + [rng.random((n, w.shape[0]), dtype=x.dtype) for w in kernels[1:]]
    outs = [np.empty((n, w.shape[1]), x.dtype) for w in kernels]
    dzs = [rng.standard_normal((n, w.shape[1])).astype(x.dtype) for w in kernels]
    grads = [np.empty_like(w) for w in kernels]
    dxs = [np.empty((n, w.shape[0]), x.dtype) for w in kernels]
    return kernels, ins, outs, dzs, grads, dxs


def _matrix_products(model, x):
    """A callable doing only the matrix products of one training step of ``model`` on ``x``."""
    kernels, ins, outs, dzs, grads, dxs = product_operands(model, x)

    def products():
        for h, w, o in zip(ins, kernels, outs):
            np.matmul(h, w, out=o)
        for i in reversed(range(len(kernels))):
            np.matmul(ins[i].T, dzs[i], out=grads[i])
            if i:
                np.matmul(dzs[i], kernels[i].T, out=dxs[i])

    return products


def bench_train_step(
    batches: Sequence[int] = BATCHES,
    variants: Sequence[str] = ("bn", "plain"),
    cfg: TimingConfig = FULL,
    *,
    use_torch: bool = True,
    seed: int = 0,
    peers=(),
) -> list[dict]:
    """One row per (variant, batch): medians in seconds per step and ratios peer / normlab.

    ``fastest_peer`` names the fastest of torch eager, torch.compile and jax.jit
    that ran, and ``ratio_fastest`` is its time over normlab's ``_train_step``.
    """
    rows = []
    for variant in variants:
        if variant not in ("bn", "plain"):
            raise ValueError(f"unknown variant {variant!r}; use 'bn' or 'plain'")
        for batch in batches:
            cases, info = make_cases(int(batch), variant == "bn", use_torch=use_torch, seed=seed, peers=peers)
            t = time_interleaved(cases, cfg)
            peer_s = {k: t[k]["median_s"] for k in ("torch", "torch_compile", "jax_jit") if k in t}
            fastest = min(peer_s, key=peer_s.get) if peer_s else None
            tob = t["normlab_train_on_batch"]["median_s"]
            step = t["normlab_train_step"]["median_s"]
            graph = t["normlab_functional_train_step"]["median_s"]
            tt = t["torch"]["median_s"] if "torch" in t else None
            mp = t["matrix_products"]["median_s"]
            rows.append(
                {
                    "variant": variant,
                    "batch": int(batch),
                    "normlab_train_on_batch_s": tob,
                    "normlab_train_step_s": step,
                    "normlab_functional_train_step_s": graph,
                    "functional_over_sequential": graph / step,
                    "torch_s": tt,
                    "ratio_train_on_batch": tt / tob if tt is not None else None,
                    "ratio_train_step": tt / step if tt is not None else None,
                    "matrix_products_s": mp,
                    "ratio_ceiling": tt / mp if tt is not None else None,
                    "torch_compile_s": peer_s.get("torch_compile"),
                    "jax_jit_s": peer_s.get("jax_jit"),
                    "ratio_compile": peer_s["torch_compile"] / step if "torch_compile" in peer_s else None,
                    "ratio_jax": peer_s["jax_jit"] / step if "jax_jit" in peer_s else None,
                    "fastest_peer": fastest,
                    "ratio_fastest": peer_s[fastest] / step if fastest else None,
                    **info,
                    "timings": t,
                }
            )
    return rows
