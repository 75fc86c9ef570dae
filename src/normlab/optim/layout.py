"""Where a bound optimizer keeps its memory: one byte arena for parameters, state and counters.

:meth:`normlab.optim.Optimizer.bind` copies the trainable arrays into a
:class:`Binding`. Parameters of one dtype form one flat buffer (a *group*);
the caller gets per-variable views into it back, and a flat gradient buffer
per group with views likewise. The chain's state and the counters
(``meta``: iterations, skipped steps, last global norm, as float64) live in
the same arena, each group's per-parameter slots as consecutive rows of one
``(slots, n)`` block. A second arena of the same size, the *shadow*, has the
same views.

That layout gives the step its transaction: a fused kernel writes the arena
in one call; the NumPy path computes into the shadow and commits with one
``np.copyto(arena, shadow)``. Either way, parameters, slots and counters
change together or not at all.

The chain sees one array per group when its links are all elementwise
(``GradientTransformation.spec`` is set), else one view per parameter (a
link such as ``clip_by_norm`` needs the variables apart).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..kernels import optim as K

_ALIGN = 64
META_SIZE = 3  # iterations, skipped_steps, last_global_norm


class FusedPlan(NamedTuple):
    """A chain that is one rule, the learning rate and optional momentum: one kernel call per step."""

    rule: K.Rule
    consts: object  # (info, state, dtype) -> tuple
    link: int  # index of the rule's link in the chain state (-1: none)
    momentum: tuple | None  # (beta, nesterov)


def fused_plan(spec) -> FusedPlan | None:
    """The plan for a chain spec of the form ``[rule] + lr + [momentum]``, else None."""
    if spec is None:
        return None
    kinds = [s.kind for s in spec]
    i, rule, consts, link = 0, K.sgd, (lambda info, state, dt: ()), -1
    if kinds[:1] == ["rule"]:
        rule, consts, link, i = spec[0].rule, spec[0].consts, 0, 1
    if kinds[i : i + 1] != ["lr"] or not spec[i].args[0]:
        return None
    i += 1
    mom = None
    if kinds[i : i + 1] == ["momentum"]:
        mom, i = spec[i].args, i + 1
    if i != len(spec):
        return None
    return FusedPlan(rule, consts, link, mom)


def _map_state(state, fn):
    """Rebuild ``state`` (tuples, lists, dicts of arrays) with ``fn(path, array)`` at every array."""

    def walk(x, path):
        if isinstance(x, (np.ndarray, np.generic)):  # a link may return a NumPy scalar for a 0-d slot
            return fn(path, x)
        if isinstance(x, dict):
            return {k: walk(v, path + (k,)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(walk(v, path + (j,)) for j, v in enumerate(x))
        return x

    return walk(state, ())


def _leaves(state) -> list:
    out = []
    _map_state(state, lambda path, a: out.append((path, a)) or a)
    return out


def _key(path) -> tuple[str, int | None]:
    """The saved name of a state entry: its slot (the innermost dict key) and parameter index (list index)."""
    name = next((str(k) for k in reversed(path) if isinstance(k, str)), "state")
    return name, (path[-1] if path and isinstance(path[-1], int) else None)


def state_keys(state) -> dict[str, np.ndarray]:
    """``{"slot/i": array, "scalar": array}`` for a state whose lists hold one array per parameter."""
    out: dict[str, np.ndarray] = {}
    for path, a in _leaves(state):
        name, j = _key(path)
        key = name if j is None else f"{name}/{j}"
        if key in out:  # pragma: no cover - a programming error in a chain
            raise RuntimeError(f"two links of the chain use the slot {key!r}")
        out[key] = a
    return out


class Group(NamedTuple):
    dtype: np.dtype
    index: list  # parameter indices
    offsets: list  # element offset of each parameter in the flat buffer
    g: np.ndarray  # flat gradients
    buffers: K.StepBuffers | None  # for the fused step (single-group bindings)


class Binding:
    """The memory an optimizer's step works on (see the module docstring).

    Attributes used by the optimizer: ``params`` / ``grads`` (per-variable
    views), ``chain_params`` / ``chain_params_sh`` / ``chain_grads`` (what the
    chain sees, live and shadow), ``work`` and ``scratch`` (the chain's work
    arrays), ``state`` / ``state_sh`` (the chain's state, live and shadow),
    ``meta`` / ``meta_sh``, ``arena`` / ``shadow``, ``groups``, ``slots``
    (``{"momentum/0": per-parameter view}``), ``scalars`` (other state entries)
    and ``fused`` (a :class:`FusedPlan` when the step is one kernel call).
    """

    def __init__(self, transform, params: list, grads: list, names, meta: np.ndarray):
        self.names = names
        self.shapes = [p.shape for p in params]
        self.dtypes = [p.dtype for p in params]
        flat = transform.spec is not None
        order: dict = {}
        for i, p in enumerate(params):
            order.setdefault(p.dtype, []).append(i)
        sizes = [p.size for p in params]
        group_n = {dt: sum(sizes[i] for i in idx) for dt, idx in order.items()}

        # the chain's state, built on temporaries that hold the current values
        def group_copy(dt, idx):
            return np.concatenate([params[i].reshape(-1) for i in idx]) if idx else np.empty(0, dt)

        seen = [group_copy(dt, idx) for dt, idx in order.items()] if flat else [np.array(p) for p in params]
        state = transform.init(seen)
        leaves = _leaves(state)
        n_chain = len(seen)

        # arena layout: meta, then per group its parameters and its row slots, then the rest
        offset = 0
        places: dict = {}

        def place(key, nbytes):
            nonlocal offset
            offset = -(-offset // _ALIGN) * _ALIGN
            places[key] = offset
            offset += nbytes

        place("meta", 8 * META_SIZE)
        rows: dict = {dt: [] for dt in order}
        others = []
        for path, a in leaves:
            j = path[-1] if path and isinstance(path[-1], int) else None
            if flat and j is not None and j < n_chain and a.shape == seen[j].shape and a.dtype == seen[j].dtype:
                rows[list(order)[j]].append(path)
            else:
                others.append((path, a))
        for gi, (dt, idx) in enumerate(order.items()):
            place(("p", gi), group_n[dt] * dt.itemsize)
            place(("S", gi), len(rows[dt]) * group_n[dt] * dt.itemsize)
        for path, a in others:
            place(path, a.nbytes)
        self.arena = np.zeros(max(offset, 1), np.uint8)
        self.shadow = np.zeros_like(self.arena)

        def view(buf, key, dtype, shape):
            start = places[key]
            count = int(np.prod(shape, dtype=np.int64))
            return buf[start : start + count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

        self.meta = view(self.arena, "meta", np.float64, (META_SIZE,))
        self.meta_sh = view(self.shadow, "meta", np.float64, (META_SIZE,))
        self.meta[...] = meta

        self.params = [None] * len(params)
        self.grads = [None] * len(params)
        self._state_pairs: list = []  # (live, shadow) views of every state region
        self.groups = []
        row_of: dict = {}
        group_live, group_sh = [], []
        for gi, (dt, idx) in enumerate(order.items()):
            n = group_n[dt]
            p = view(self.arena, ("p", gi), dt, (n,))
            p_sh = view(self.shadow, ("p", gi), dt, (n,))
            S = view(self.arena, ("S", gi), dt, (len(rows[dt]), n))
            S_sh = view(self.shadow, ("S", gi), dt, (len(rows[dt]), n))
            g = np.zeros(n, dt)
            offs, at = [], 0
            for i in idx:
                sl = slice(at, at + sizes[i])
                self.params[i] = p[sl].reshape(self.shapes[i])
                self.params[i][...] = params[i]
                self.grads[i] = g[sl].reshape(self.shapes[i])
                if grads is not None:
                    np.copyto(self.grads[i], grads[i], casting="same_kind")
                offs.append(at)
                at += sizes[i]
            for r, path in enumerate(rows[dt]):
                row_of[path] = (S[r], S_sh[r])
            self._state_pairs.append((S, S_sh))
            single = len(order) == 1
            buffers = K.StepBuffers(g, p, S, self.meta, self.arena, self.shadow, p_sh, S_sh, self.meta_sh) \
                if single else None
            self.groups.append(Group(dt, idx, offs, g, buffers))
            group_live.append(p)
            group_sh.append(p_sh)

        def live(path, a):
            if path in row_of:
                v = row_of[path][0]
            else:
                v = view(self.arena, path, a.dtype, a.shape)
            np.copyto(v, a)
            return v

        def shadow(path, a):
            if path in row_of:
                return row_of[path][1]
            v = view(self.shadow, path, a.dtype, a.shape)
            self._state_pairs.append((view(self.arena, path, a.dtype, a.shape), v))
            return v

        self.state = _map_state(state, live)
        self.state_sh = _map_state(self.state, shadow)
        np.copyto(self.shadow, self.arena)
        if flat:
            self.chain_params, self.chain_params_sh = group_live, group_sh
            self.chain_grads = [grp.g for grp in self.groups]
        else:
            self.chain_params = self.params
            self.chain_params_sh = [None] * len(params)
            for grp, psh in zip(self.groups, group_sh):
                for i, o in zip(grp.index, grp.offsets):
                    self.chain_params_sh[i] = psh[o : o + sizes[i]].reshape(self.shapes[i])
            self.chain_grads = self.grads
        self.work = [np.empty_like(a) for a in self.chain_grads]
        self.scratch = [np.empty_like(a) for a in self.chain_grads]
        self.flat = flat

        # per-parameter names of the state: "slot/i" for parameter i, "slot" for a scalar
        self.slots: dict[str, np.ndarray] = {}
        self.scalars: dict[str, np.ndarray] = {}
        for path, a in _leaves(self.state):
            name, j = _key(path)
            if j is None:
                self._add(self.scalars, name, a)
            elif flat and path in row_of:
                grp = self.groups[j]
                for i, o in zip(grp.index, grp.offsets):
                    self._add(self.slots, f"{name}/{i}", a[o : o + sizes[i]].reshape(self.shapes[i]))
            else:
                self._add(self.slots, f"{name}/{j}", a)

        self.fused = None
        plan = fused_plan(transform.spec)
        if plan is not None and len(self.groups) == 1 and not others:
            names_in_rows = [_key(p)[0] for p in rows[self.groups[0].dtype]]
            expected = list(plan.rule.slots) + (["momentum"] if plan.momentum else [])
            if names_in_rows == expected:
                self.fused = plan

    def _add(self, target, key, a):
        if key in self.slots or key in self.scalars:  # pragma: no cover - a programming error in a chain
            raise RuntimeError(f"two links of the chain use the slot {key!r}")
        target[key] = a

    def refresh_shadow_state(self) -> None:
        """Copy the live state into the shadow (the parameters and counters there are rewritten by a step)."""
        for live, sh in self._state_pairs:
            np.copyto(sh, live)

    def write_state(self, arrays: dict, counters: dict | None, missing_ok: bool = False) -> None:
        """Copy saved state entries (by key) and counters into the arena, in one write of it."""
        new = self.arena.copy()
        base = self.arena.__array_interface__["data"][0]
        for key, ref in self.state_arrays().items():
            if key not in arrays:
                if missing_ok:
                    continue
                raise KeyError(key)  # pragma: no cover - checked by the caller
            if arrays[key].shape != ref.shape or not ref.size:
                continue
            start = ref.__array_interface__["data"][0] - base
            target = new[start : start + ref.nbytes].view(ref.dtype).reshape(ref.shape)
            np.copyto(target, arrays[key], casting="unsafe")
        if counters is not None:
            meta = new[: 8 * META_SIZE].view(np.float64)
            meta[0], meta[1] = counters["iterations"], counters["skipped_steps"]
        np.copyto(self.arena, new)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every state entry by its saved name (views)."""
        return {**self.slots, **self.scalars}

    def global_norm(self) -> float:
        """The L2 norm of the gradients, over the arrays the chain sees."""
        from ..kernels.checks import sum_squares

        return math.sqrt(sum(sum_squares(a) for a in self.chain_grads))
