"""NumPy's side of the optimizer rules: a per-element function run as a fixed list of ufunc calls.

A rule of :mod:`normlab.kernels.optim` is arithmetic on its arguments.
Evaluated on arrays, every operator allocates a temporary as large as its
operands; for the 100k parameters of the BN-paper network that was most of
the step (an allocation, page faults and a free per operator). Instead, the
function is called once with symbols (:func:`program`): each operator and
ufunc it applies is recorded, and the record is compiled into a Python
function that makes the same ufunc calls, in the same order, each writing
with ``out=`` into one of a few preallocated registers or straight into an
output array. The IEEE operations are those of evaluating the function on
the arrays (and of numba evaluating it on scalars), so the results agree bit
for bit; only the temporaries are gone.

What can be traced: ``+ - * /``, unary ``-``, single-output ufuncs
(``np.sqrt``, ``np.sign``, ``np.maximum``, ...) and ``np.clip`` of the
arguments, of the results, and of Python numbers. Arguments given as ``static`` (flags such as
``nesterov``) are passed as they are, so the function may branch on them; a
branch on a traced value raises :class:`Untraceable`, and the caller then
evaluates the function on the arrays directly.
"""

from __future__ import annotations

import numbers
import threading

import numpy as np

__all__ = ["Untraceable", "program", "run"]

# elements per slice: large enough that the ~1 us per ufunc call is small against the
# work (slices of 16k elements made a step 40% slower), small enough that the
# registers stay bounded (1 MiB each in float64) for a model of any size
CHUNK = 131072


class Untraceable(TypeError):
    """The function does something other than elementwise arithmetic on its traced arguments."""


class _Sym:
    """A value during tracing: an argument, or the result of a recorded operation."""

    __slots__ = ("rec", "ref")
    __array_priority__ = 1000

    def __init__(self, rec, ref):
        self.rec, self.ref = rec, ref

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or kwargs or ufunc.nout != 1 or ufunc.__name__ == "clip":
            raise Untraceable(f"{ufunc.__name__}.{method} with {sorted(kwargs)}")
        return self.rec.op(ufunc, inputs)

    def __bool__(self):
        raise Untraceable("a branch on a traced value")

    def __add__(self, o):
        return self.rec.op(np.add, (self, o))

    def __radd__(self, o):
        return self.rec.op(np.add, (o, self))

    def __sub__(self, o):
        return self.rec.op(np.subtract, (self, o))

    def __rsub__(self, o):
        return self.rec.op(np.subtract, (o, self))

    def __mul__(self, o):
        return self.rec.op(np.multiply, (self, o))

    def __rmul__(self, o):
        return self.rec.op(np.multiply, (o, self))

    def __truediv__(self, o):
        return self.rec.op(np.true_divide, (self, o))

    def __rtruediv__(self, o):
        return self.rec.op(np.true_divide, (o, self))

    def __neg__(self):
        return self.rec.op(np.negative, (self,))

    def clip(self, lo, hi, out=None, **kwargs):  # what np.clip(symbol, lo, hi) calls
        if out is not None or kwargs:
            raise Untraceable("np.clip with out= or other arguments")
        return self.rec.op(np.clip, (self, lo, hi))


class _Recorder:
    def __init__(self):
        self.ops: list = []  # (ufunc, operand refs); a ref is ("in", i), ("op", j) or ("k", number)

    def ref(self, x):
        if isinstance(x, _Sym):
            if x.rec is not self:  # pragma: no cover - a symbol kept from another trace
                raise Untraceable("a symbol of another trace")
            return x.ref
        if isinstance(x, numbers.Number) and not isinstance(x, (bool, np.bool_)):
            return ("k", x)
        raise Untraceable(f"an operand of type {type(x).__name__}")

    def op(self, ufunc, inputs):
        refs = tuple(self.ref(x) for x in inputs)
        self.ops.append((ufunc, refs))
        return _Sym(self, ("op", len(self.ops) - 1))


class Program:
    """A traced function compiled for given input kinds: ``fn(inputs..., outputs..., registers...)``."""

    __slots__ = ("fn", "n_regs", "reg_dtypes", "array_inputs")

    def __init__(self, fn, reg_dtypes, array_inputs):
        self.fn, self.reg_dtypes, self.array_inputs = fn, reg_dtypes, array_inputs
        self.n_regs = len(reg_dtypes)


_programs: dict = {}
_local = threading.local()


def _kind(x):
    """What a compiled program depends on in an input: an array's dtype, or a scalar's type."""
    if isinstance(x, np.ndarray) and x.ndim:
        return ("a", x.dtype)
    return ("s", type(x), getattr(x, "dtype", None))


def program(fn, inputs: list, static: dict, outputs: list, aliases: tuple) -> Program | None:
    """``fn`` traced and compiled for these kinds of inputs and outputs; None when it cannot be traced.

    ``inputs``: the traced arguments in order, arrays (1-D, all of one size)
    or scalars; ``static``: ``{position: value}`` of the arguments passed as
    they are (positions in the full argument list); ``outputs``: the arrays
    ``fn``'s results go to, in order (``fn`` returns a tuple, or one value
    for one output); ``aliases``:
    ``(k, i)`` pairs where output ``k`` is the same memory as input ``i``
    (an in-place update): input ``i`` is then not overwritten before its
    last use.
    """
    key = (fn, tuple(sorted(static.items())), tuple(_kind(x) for x in inputs),
           tuple(o.dtype for o in outputs), aliases)
    prog = _programs.get(key, False)
    if prog is False:
        try:
            prog = _compile(fn, inputs, static, outputs, aliases)
        except Untraceable:
            prog = None
        _programs[key] = prog
    return prog


def _compile(fn, inputs, static, outputs, aliases) -> Program:
    rec = _Recorder()
    args, it = [], iter(range(len(inputs)))
    for pos in range(len(inputs) + len(static)):
        args.append(static[pos] if pos in static else _Sym(rec, ("in", next(it))))
    try:
        result = fn(*args)
    except Untraceable:
        raise
    except Exception as exc:  # an attribute or function symbols lack: evaluated on the arrays instead
        raise Untraceable(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(result, tuple):
        result = (result,)
    if len(result) != len(outputs):
        raise Untraceable("the function must return one value per output")
    outs = [rec.ref(r) for r in result]
    ops = rec.ops
    n_in = len(inputs)

    # each operation's result: an array (which dtype) or a scalar, found on empty arrays
    probe = [np.empty(0, x.dtype) if isinstance(x, np.ndarray) and x.ndim else x for x in inputs]
    values: list = []

    def value(ref):
        kind, i = ref
        return probe[i] if kind == "in" else values[i] if kind == "op" else i

    with np.errstate(all="ignore"):
        for ufunc, refs in ops:
            values.append(ufunc(*(value(r) for r in refs)))
    is_array = [isinstance(v, np.ndarray) and v.ndim == 1 for v in values]
    in_array = [isinstance(x, np.ndarray) and x.ndim == 1 for x in probe]

    # last read of every input and every result (outputs kept to the end)
    end = len(ops)
    last_in, last_op = [-1] * n_in, [-1] * len(ops)
    for j, (_, refs) in enumerate(ops):
        for kind, i in refs:
            if kind == "in":
                last_in[i] = j
            elif kind == "op":
                last_op[i] = j
    alias_of = dict(aliases)  # output -> input it overwrites
    for k, (kind, i) in enumerate(outs):  # an output that is an input is copied after the last operation
        if kind == "in" and alias_of.get(k) != i:
            last_in[i] = end

    # where each array result is written: an output directly, or a register
    target: dict = {}  # op index -> ("o", k) or ("r", register)
    copies = []  # (output k, ref) written after the last operation
    for k, ref in enumerate(outs):
        kind, j = ref
        if kind == "op" and is_array[j] and j not in target and values[j].dtype == outputs[k].dtype and (
                k not in alias_of or last_in[alias_of[k]] <= j):
            target[j] = ("o", k)
        elif not (kind == "in" and alias_of.get(k) == j):
            copies.append((k, ref))
            if kind == "op":
                last_op[j] = end
    reg_dtypes: list = []
    free: dict = {}  # dtype -> free registers
    lines, names = [], {}
    for j, (ufunc, refs) in enumerate(ops):
        for kind, i in set(refs):  # registers whose value is read for the last time here may take the result
            if kind == "op" and last_op[i] == j and target.get(i, ("o",))[0] == "r":
                free.setdefault(values[i].dtype, []).append(target[i][1])
        uname = names.setdefault(ufunc, f"u{len(names)}")
        operands = ", ".join(_src(r, target) for r in refs)
        if not is_array[j]:  # all operands scalar: computed once per call
            lines.append(f"    v{j} = {uname}({operands})")
            continue
        if j not in target:
            pool = free.get(values[j].dtype)
            if pool:
                target[j] = ("r", pool.pop())
            else:
                target[j] = ("r", len(reg_dtypes))
                reg_dtypes.append(values[j].dtype)
        lines.append(f"    {uname}({operands}, out={_src(('op', j), target)})")
        if last_op[j] < 0 and target[j][0] == "r":  # never read: the register is free again
            free.setdefault(values[j].dtype, []).append(target[j][1])
    for k, ref in copies:
        lines.append(f"    np.copyto(o{k}, {_src(ref, target)})")
    params = [f"i{i}" for i in range(n_in)] + [f"o{k}" for k in range(len(outputs))] + [
        f"r{r}" for r in range(len(reg_dtypes))]
    src = f"def run({', '.join(params)}):\n" + ("\n".join(lines) or "    pass") + "\n"
    namespace = {"np": np, **{name: u for u, name in names.items()}}
    exec(compile(src, f"<normlab rule {getattr(fn, '__name__', 'fn')}>", "exec"), namespace)
    return Program(namespace["run"], tuple(reg_dtypes), tuple(in_array))


def _src(ref, target) -> str:
    kind, i = ref
    if kind == "in":
        return f"i{i}"
    if kind == "k":
        return repr(i)
    t = target.get(i)
    if t is None:
        return f"v{i}"
    return f"o{t[1]}" if t[0] == "o" else f"r{t[1]}"


def _registers(dtypes: tuple) -> list:
    """Per-thread work arrays of CHUNK elements, one per entry of ``dtypes`` (distinct arrays)."""
    cache = getattr(_local, "regs", None)
    if cache is None:
        cache = _local.regs = {}
    regs = cache.get(dtypes)
    if regs is None or (regs and regs[0].size < CHUNK):
        regs = cache[dtypes] = [np.empty(CHUNK, dt) for dt in dtypes]
    return regs


def run(prog: Program, inputs: list, outputs: list) -> None:
    """Run ``prog`` on 1-D arrays of one size (and scalars), in slices of :data:`CHUNK` elements."""
    regs = _registers(prog.reg_dtypes)
    n = outputs[0].size if outputs else 0
    if n <= CHUNK:
        prog.fn(*inputs, *outputs, *[r[:n] for r in regs])
        return
    arr = prog.array_inputs
    for a in range(0, n, CHUNK):
        c = slice(a, a + CHUNK)
        m = min(CHUNK, n - a)
        prog.fn(*[x[c] if is_a else x for x, is_a in zip(inputs, arr)], *[o[c] for o in outputs],
                *[r[:m] for r in regs])
