"""Where a bound optimizer keeps its memory: one byte arena for parameters, state and counters.

:meth:`normlab.optim.Optimizer.bind` copies the trainable arrays into a
:class:`Binding`. Parameters of one dtype form one flat buffer (a *group*);
the caller gets per-variable views into it back, and a flat gradient buffer
per group with views likewise. The chain's state and the counters live in
the same arena:

- the *head*, float64: ``iterations``, ``skipped_steps``,
  ``last_global_norm``, which copy of a fused binding's slots is live, then
  the chain's float64 scalar slots (Nadam's ``u_product``);
- per group, its parameters, then its slots as consecutive rows of one
  ``(slots, n)`` block: a slot that the chain keeps for every array it sees
  is one row, whether it sees one flat array per group or one view per
  variable;
- any other state entries.

That layout gives the step its transaction, in one of two ways:

- a chain of the form ``[clip] rule lr [momentum] [decay]`` on one group is
  *fused* (:class:`FusedPlan`). Its slot rows are kept twice, and a shadow
  holds a copy of the head and the parameters only. The numba kernel
  updates the live copy and the head in one call; the NumPy step writes the
  new slots into the other copy and the new parameters and head (naming
  that copy live) into the shadow, then commits with one ``np.copyto`` of
  the shadow's head and parameters: the state is not copied at all;
- any other chain runs on a shadow of the whole arena (parameters, state
  and counters), and one ``np.copyto(arena, shadow)`` commits it.

Either way, parameters, slots and counters change together or not at all.

The chain sees one array per group when its links are all elementwise
(``GradientTransformation.spec`` is set and no link is per-variable), else
one view per parameter (``clip_by_norm`` needs the variables apart); a
fused step works on either layout.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from ..kernels import optim as K
from ..kernels.checks import sum_squares

_ALIGN = 64
META_SIZE = 3  # iterations, skipped_steps, last_global_norm
_SCALARS = K.LIVE + 1  # the head: the counters, which copy of a fused binding's slots is live, the scalar slots
_CLIPS = ("clip_value", "clip_global", "clip_norm")


def _no_consts(info, state, dt):
    return ()


class FusedPlan(NamedTuple):
    """A chain ``[clip] [rule] lr [momentum] [decay]``: one kernel call per step.

    ``rule_path`` / ``momentum_path``: where those links' state is in the
    chain's state (None: no such link). ``clip``: ``(kind, c)`` with kind
    one of ``"clip_value"``, ``"clip_global"``, ``"clip_norm"``. ``decay``:
    the weight decay (0: none). ``scalars`` / ``commit``: the rule's scalar
    slots and the function giving their values after a step.
    """

    rule: K.Rule
    consts: Callable  # (info, rule link state, dtype) -> tuple
    rule_path: tuple | None
    scalars: tuple
    commit: Callable | None
    momentum: tuple | None  # (beta, nesterov)
    momentum_path: tuple | None
    clip: tuple | None
    decay: float

    def rows(self) -> list:
        """The state keys of the kernel's slot rows, in order: the rule's slots, then the momentum."""
        keys = [self.rule_path + (s,) for s in self.rule.slots] if self.rule_path is not None else []
        if self.momentum is not None:
            keys.append(self.momentum_path + ("momentum",))
        return keys

    def head(self) -> list:
        """The state keys of the rule's scalar slots, in the order ``commit`` gives them."""
        return [self.rule_path + (s,) for s in self.scalars]


def fused_plan(spec) -> FusedPlan | None:
    """The plan for a chain spec of the form ``[clip] [rule] lr [momentum] [decay]``, else None."""
    if spec is None:
        return None
    n, i = len(spec), 0

    def at(kind):
        return i < n and spec[i].kind == kind

    clip = None
    if i < n and spec[i].kind in _CLIPS:
        clip, i = (spec[i].kind, spec[i].args[0]), i + 1
    rule, consts, rule_path, scalars, commit = K.sgd, _no_consts, None, (), None
    if at("rule"):
        s = spec[i]
        if s.scalars and s.commit is None:
            return None
        rule, consts, rule_path, scalars, commit, i = s.rule, s.consts, s.path, s.scalars, s.commit, i + 1
    if not at("lr") or not spec[i].args[0]:
        return None
    i += 1
    mom = mom_path = None
    if at("momentum"):
        mom, mom_path, i = spec[i].args, spec[i].path, i + 1
    wd = 0.0
    if at("decay"):
        wd, i = spec[i].args[0], i + 1
    if i != n:
        return None
    return FusedPlan(rule, consts, rule_path, tuple(scalars), commit, mom, mom_path, clip, wd)


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


def state_at(state, path):
    """The part of a (nested) chain state at ``path``."""
    for k in path:
        state = state[k]
    return state


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
    arrays), ``state`` / ``state_sh`` (the chain's state, live and shadow;
    ``states``: the state with either copy of a fused binding's slots live),
    ``head`` / ``head_sh`` and their first entries ``meta`` / ``meta_sh``,
    ``arena`` / ``shadow``, ``groups``, ``slots`` (``{"momentum/0":
    per-parameter view}``), ``scalars`` (other state entries) and ``fused``
    (a :class:`FusedPlan` when the step is one kernel call).
    """

    def __init__(self, transform, params: list, grads: list, names, meta: np.ndarray):
        self.names = names
        self.shapes = [p.shape for p in params]
        self.dtypes = [p.dtype for p in params]
        spec = transform.spec
        flat = spec is not None and not any(s.per_variable for s in spec)
        order: dict = {}
        for i, p in enumerate(params):
            order.setdefault(p.dtype, []).append(i)
        group_idx = list(order.values())
        sizes = [p.size for p in params]
        group_n = [sum(sizes[i] for i in idx) for idx in group_idx]
        offsets = []
        for idx in group_idx:
            at, offs = 0, []
            for i in idx:
                offs.append(at)
                at += sizes[i]
            offsets.append(offs)

        # what the chain sees: (group, offset, size, shape) of each of its arrays
        if flat:
            seen_at = [(gi, 0, n, (n,)) for gi, n in enumerate(group_n)]
        else:
            seen_at = [None] * len(params)
            for gi, idx in enumerate(group_idx):
                for i, o in zip(idx, offsets[gi]):
                    seen_at[i] = (gi, o, sizes[i], self.shapes[i])
        # the chain's state, built on temporaries that hold the current values
        seen = [np.concatenate([params[i].reshape(-1) for i in idx]) for idx in group_idx] if flat \
            else [np.array(p) for p in params]
        state = transform.init(seen)
        leaves = _leaves(state)

        # rows: a slot kept for every array of a group; the head: float64 scalars; the rest
        candidates: list = [{} for _ in group_idx]
        head_paths, others = [], []
        for path, a in leaves:
            j = path[-1] if path and isinstance(path[-1], int) else None
            if j is not None and j < len(seen) and a.shape == seen[j].shape and a.dtype == seen[j].dtype:
                candidates[seen_at[j][0]].setdefault(path[:-1], {})[j] = (path, a)
            elif a.shape == () and a.dtype == np.float64:
                head_paths.append(path)
            else:
                others.append((path, a))
        rows: list = []
        for gi, cand in enumerate(candidates):
            members = {j for j, at in enumerate(seen_at) if at[0] == gi}
            rows.append([key for key, d in cand.items() if set(d) == members])
            others += [pa for key, d in cand.items() if set(d) != members for pa in d.values()]

        plan = fused_plan(spec)
        if plan is not None and not (len(group_idx) == 1 and not others and set(rows[0]) == set(plan.rows())
                                     and set(head_paths) == set(plan.head())):
            plan = None
        if plan is not None:  # the kernel's order
            rows[0], head_paths = plan.rows(), plan.head()
        self.fused = plan

        # arena layout: the head, then per group its parameters and its slot rows, then the rest
        offset = 0
        places: dict = {}

        def place(key, nbytes):
            nonlocal offset
            offset = -(-offset // _ALIGN) * _ALIGN
            places[key] = offset
            offset += nbytes

        nhead = _SCALARS + len(head_paths)
        place("head", 8 * nhead)
        for gi, dt in enumerate(order):
            place(("p", gi), group_n[gi] * dt.itemsize)
            if gi == 0:
                committed = offset  # a fused step's shadow: the head and the parameters
            place(("S", gi), len(rows[gi]) * group_n[gi] * dt.itemsize)
        if plan is not None:  # a fused step writes its slots into a second copy, then names it live
            place(("S", 1), len(rows[0]) * group_n[0] * list(order)[0].itemsize)
        for path, a in others:
            place(path, a.nbytes)
        self.arena = np.zeros(max(offset, 1), np.uint8)
        self.shadow = np.zeros(committed if plan is not None else self.arena.size, np.uint8)

        def view(buf, key, dtype, shape):
            start = places[key]
            count = int(np.prod(shape, dtype=np.int64))
            return buf[start : start + count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

        self.head = view(self.arena, "head", np.float64, (nhead,))
        self.head_sh = view(self.shadow, "head", np.float64, (nhead,))
        self.meta, self.meta_sh = self.head[:META_SIZE], self.head_sh[:META_SIZE]
        self.meta[...] = meta
        self.new_head = np.empty(nhead)

        # (live, shadow) view of every state entry, and of every state region
        leaf_views: dict = {}
        for q, path in enumerate(head_paths):
            k = _SCALARS + q
            leaf_views[path] = (self.head[k : k + 1].reshape(()), self.head_sh[k : k + 1].reshape(()))
        self._state_pairs: list = [(self.head[_SCALARS:], self.head_sh[_SCALARS:])] if head_paths else []
        self.params = [None] * len(params)
        self.grads = [None] * len(params)
        self.groups = []
        group_live, group_sh = [], []
        for gi, (dt, idx) in enumerate(order.items()):
            n = group_n[gi]
            p = view(self.arena, ("p", gi), dt, (n,))
            p_sh = view(self.shadow, ("p", gi), dt, (n,))
            S = view(self.arena, ("S", gi), dt, (len(rows[gi]), n))
            # the other copy of the slots: the second one of a fused binding, else the shadow's
            S_sh = view(self.arena if plan is not None else self.shadow, ("S", 1 if plan is not None else gi), dt,
                        (len(rows[gi]), n))
            g = np.zeros(n, dt)
            for i, o in zip(idx, offsets[gi]):
                sl = slice(o, o + sizes[i])
                self.params[i] = p[sl].reshape(self.shapes[i])
                self.params[i][...] = params[i]
                self.grads[i] = g[sl].reshape(self.shapes[i])
                if grads is not None:
                    np.copyto(self.grads[i], grads[i], casting="same_kind")
            for r, key in enumerate(rows[gi]):
                for j, (path, _) in candidates[gi][key].items():
                    _, o, size, shape = seen_at[j]
                    leaf_views[path] = (S[r, o : o + size].reshape(shape), S_sh[r, o : o + size].reshape(shape))
            self._state_pairs.append((S, S_sh))
            buffers = None
            if plan is not None:
                bounds = np.array(offsets[gi] + [n], dtype=np.int64)
                buffers = K.StepBuffers(g, p, (S, S_sh), self.head, p_sh, self.head_sh,
                                        (self.arena[: self.shadow.size], self.shadow), bounds,
                                        np.array([0, n], dtype=np.int64), {})
            self.groups.append(Group(dt, idx, offsets[gi], g, buffers))
            group_live.append(p)
            group_sh.append(p_sh)
        for path, a in others:
            pair = (view(self.arena, path, a.dtype, a.shape), view(self.shadow, path, a.dtype, a.shape))
            leaf_views[path] = pair
            self._state_pairs.append(pair)

        def live(path, a):
            v = leaf_views[path][0]
            np.copyto(v, a)
            return v

        state = _map_state(state, live)
        self.state_sh = _map_state(state, lambda path, a: leaf_views[path][1])
        # the chain's state as seen when each copy of the slots is live (a fused binding's second copy)
        row_paths = {path for gi, cand in enumerate(candidates) for key in rows[gi] for path, _ in cand[key].values()}
        second = _map_state(state, lambda path, a: leaf_views[path][1] if path in row_paths else a)
        self.states = (state, second if plan is not None else state)
        np.copyto(self.shadow, self.arena[: self.shadow.size])
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
        self._named = []
        for tree in self.states:
            slots: dict[str, np.ndarray] = {}
            scalars: dict[str, np.ndarray] = {}
            for path, a in _leaves(tree):
                name, j = _key(path)
                if j is None:
                    _add(slots, scalars, scalars, name, a)
                elif flat and path in row_paths:
                    grp = self.groups[j]
                    for i, o in zip(grp.index, grp.offsets):
                        _add(slots, scalars, slots, f"{name}/{i}", a[o : o + sizes[i]].reshape(self.shapes[i]))
                else:
                    _add(slots, scalars, slots, f"{name}/{j}", a)
            self._named.append((slots, scalars))

    @property
    def state(self):
        """The chain's state (views of the live copy)."""
        return self.states[int(self.head[K.LIVE])]

    @property
    def slots(self) -> dict[str, np.ndarray]:
        """``{"momentum/0": view}``: the per-parameter state entries (of the live copy)."""
        return self._named[int(self.head[K.LIVE])][0]

    @property
    def scalars(self) -> dict[str, np.ndarray]:
        """The other state entries by name (Nadam's ``"u_product"``)."""
        return self._named[0][1]

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
        """Every state entry by its saved name (views of the live copy)."""
        return {**self.slots, **self.scalars}

    def global_norm(self) -> float:
        """The L2 norm of the gradients, over the arrays the chain sees."""
        return math.sqrt(sum(sum_squares(a) for a in self.chain_grads))


def _add(slots, scalars, target, key, a):
    if key in slots or key in scalars:  # pragma: no cover - a programming error in a chain
        raise RuntimeError(f"two links of the chain use the slot {key!r}")
    target[key] = a
