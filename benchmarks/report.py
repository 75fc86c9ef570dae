"""Render benchmark results: a text table, Markdown, JSON."""

from __future__ import annotations

import json
import math

from .bench_bn import PASS_ASSUMPTIONS
from .bench_train_step import GRAD_TOL

__all__ = ["format_text", "format_markdown", "write_json", "write_markdown"]


def _t(s) -> str:
    """Seconds -> a short human string in us or ms."""
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e3:.2f} ms"


def _r(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _shape(s) -> str:
    return "(" + ", ".join(str(int(v)) for v in s) + ")"


def _check(r) -> str:
    """'ok (grad err 2e-06)' when normlab's first step matches torch's (loss and gradients)."""
    err = r.get("grad_rel_err")
    if r.get("loss_torch") is None or err is None:
        return "-"
    loss_ok = abs(r["loss_normlab"] - r["loss_torch"]) <= 1e-3 * max(1.0, abs(r["loss_torch"]))
    ok = loss_ok and math.isfinite(err) and err <= GRAD_TOL
    return f"{'ok' if ok else 'MISMATCH'} (grad err {err:.0e})"


_PEER_NAMES = {"torch": "torch eager", "torch_cl": "torch channels-last", "torch_compile": "torch.compile",
               "jax_jit": "jax.jit"}


def _peer_cells(rows, keys):
    """Extra columns for the peers some row has: (heads, per-row cells)."""
    present = [k for k in keys if any(r.get(f"{k}_s") is not None for r in rows)]
    head = [_PEER_NAMES[k] for k in present]
    if any(r.get("fastest_peer") for r in rows) and present:
        head += ["fastest peer", "fastest peer / normlab"]
    cells = []
    for r in rows:
        c = [_t(r.get(f"{k}_s")) for k in present]
        if len(head) > len(present):
            c += [_PEER_NAMES.get(r.get("fastest_peer"), "-"), _r(r.get("ratio_fastest"))]
        cells.append(c)
    return head, cells


def _train_table(rows):
    peer_head, peer_cells = _peer_cells(rows, ("torch_compile", "jax_jit"))
    head = ["net", "batch", "normlab train_on_batch", "normlab _train_step", "functional / Sequential", "torch eager",
            "torch / train_on_batch", "torch / _train_step", *peer_head, "matrix products alone (GEMM floor)",
            "torch / products (ceiling)", "same step as torch?"]
    body = []
    for r, extra in zip(rows, peer_cells):
        check = _check(r)
        body.append([
            r["variant"].upper() if r["variant"] == "bn" else r["variant"],
            str(r["batch"]),
            _t(r["normlab_train_on_batch_s"]),
            _t(r["normlab_train_step_s"]),
            _r(r.get("functional_over_sequential")),
            _t(r["torch_s"]),
            _r(r["ratio_train_on_batch"]),
            _r(r["ratio_train_step"]),
            *extra,
            _t(r.get("matrix_products_s")),
            _r(r.get("ratio_ceiling")),
            check,
        ])
    return head, body


def _bn_table(rows):
    peer_head, peer_cells = _peer_cells(rows, ("torch_cl", "torch_compile", "jax_jit"))
    head = ["shape normlab (native)", "shape torch (native)", "normlab", "torch eager", "torch / normlab", *peer_head,
            "bound (5 passes)", "normlab / bound", "bound (8 passes)", "normlab / bound8"]
    body = []
    for r, extra in zip(rows, peer_cells):
        nl_shape = _shape(r["normlab_shape"]) + (" NHWC" if len(r["normlab_shape"]) > 2 else "")
        t_shape = _shape(r["torch_shape"]) + (" NCHW" if len(r["torch_shape"]) > 2 else "")
        body.append([
            nl_shape,
            t_shape,
            _t(r["normlab_s"]),
            _t(r["torch_s"]),
            _r(r["ratio"]),
            *extra,
            _t(r.get("bound_min_s")),
            _r(r.get("normlab_over_bound_min")),
            _t(r.get("bound_stream_s")),
            _r(r.get("normlab_over_bound_stream")),
        ])
    return head, body


_COLD_NAMES = {"normlab_cold": "normlab, empty numba cache", "normlab_warm": "normlab, warm cache",
               "normlab_after_warmup": "normlab after `normlab warmup`", "torch": "torch eager",
               "torch_compile": "torch.compile", "jax_jit": "jax.jit"}


def _cold_table(cold):
    head = ["process start to end of first step", "median", "each round"]
    body = []
    for k, v in cold["median_s"].items():
        body.append([_COLD_NAMES.get(k, k), f"{v:.2f} s", ", ".join(f"{s:.2f}" for s in cold["samples_s"][k])])
    return head, body


def _cold_note(cold) -> str:
    note = (f"{cold['rounds']} rounds, {cold['threads']} thread(s); same loss cold and warm: "
            f"{'yes, bit for bit' if cold.get('same_loss_cold_warm') else 'NO'}")
    if cold.get("warmup_s") is not None:
        note += f"; `normlab warmup` itself: {cold['warmup_s']:.2f} s"
    return note


def _text_grid(head, body) -> str:
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    lines = [fmt(head), "  ".join("-" * w for w in widths)]
    lines += [fmt(row) for row in body]
    return "\n".join(lines)


def _md_grid(head, body) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _preamble(res) -> list[str]:
    m = res["meta"]
    cfg = m["timing"]
    mach = m["machine"]
    lines = [
        f"threads: {m['threads']} (normlab and numpy's BLAS via threadpoolctl, torch.set_num_threads, "
        f"jax via XLA_FLAGS)   "
        f"mode: {'quick' if m['quick'] else 'full'}",
        f"timing: median over {cfg['repeats']} repeats, each an inner loop of ~{cfg['target_s']} s "
        f"(after warm-up + calibration); ratio = torch time / normlab time (> 1: normlab faster)",
        f"machine: {mach['cpu']}, {mach['logical_cores']} logical cores; python {mach['python']}, "
        f"numpy {mach['numpy']}, torch {mach['torch'] or 'not installed'}, normlab {mach['normlab']} "
        f"(kernels: {mach.get('normlab_kernels', '?')})",
    ]
    if m.get("loadavg_before") is not None:
        lines.append(
            f"1-min load average before/after: {m['loadavg_before']} / {m.get('loadavg_after')} "
            f"(on {mach['logical_cores']} cores; other processes share the machine)"
        )
    if not m["torch"]:
        lines.append("torch is not installed (or --no-torch): normlab times only, no ratios.")
    return lines


_CHECK_NOTE = (
    "same step as torch?: same initial weights and batch, one step each; ok when the losses agree and the "
    f"largest relative difference of the gradients is <= {GRAD_TOL:g}"
)

_CEILING_NOTE = (
    "matrix products alone: only the matrix products of one normlab step (same shapes and kernels, "
    "np.matmul into preallocated arrays); torch / products is the ratio normlab would reach if the rest "
    "of its step cost nothing"
)


def format_text(res: dict) -> str:
    out = _preamble(res)
    if res.get("train_step"):
        out += ["", "One training step, 784-100-100-100-10 sigmoid MLP, softmax + cross-entropy, SGD lr 0.01:"]
        out.append(_text_grid(*_train_table(res["train_step"])))
        out.append(_CHECK_NOTE)
    if res.get("batchnorm"):
        bw = res.get("bandwidth") or {}
        out += ["", "BatchNormalization alone, training forward + backward, float32, native layout per library:"]
        out.append(_text_grid(*_bn_table(res["batchnorm"])))
        if bw:
            out.append(f"bandwidth: {bw['bandwidth_Bps'] / 1e9:.2f} GB/s ({bw['method']})")
        out.append(f"bound: {PASS_ASSUMPTIONS}")
    if res.get("cold_start"):
        out += ["", "Cold start, BN paper's network, batch 60 (fresh processes):"]
        out.append(_text_grid(*_cold_table(res["cold_start"])))
        out.append(_cold_note(res["cold_start"]))
    return "\n".join(out)


def format_markdown(res: dict) -> str:
    out = ["\n".join(f"- {line}" for line in _preamble(res))]
    if res.get("train_step"):
        out += ["", "**One training step** (784-100-100-100-10 sigmoid MLP, softmax + cross-entropy, SGD lr 0.01; "
                "median time per step):", "", _md_grid(*_train_table(res["train_step"])), "", _CHECK_NOTE, "",
                _CEILING_NOTE]
    if res.get("batchnorm"):
        bw = res.get("bandwidth") or {}
        out += ["", "**BatchNormalization alone** (training forward + backward, float32, each library in its "
                "native layout; median time per call):", "", _md_grid(*_bn_table(res["batchnorm"]))]
        if bw:
            out += ["", f"Bandwidth: {bw['bandwidth_Bps'] / 1e9:.2f} GB/s ({bw['method']})."]
        out += ["", f"Bound: {PASS_ASSUMPTIONS}."]
    if res.get("cold_start"):
        out += ["", "**Cold start** (BN paper's network, batch 60, fresh processes):", "",
                _md_grid(*_cold_table(res["cold_start"])), "", _cold_note(res["cold_start"]) + "."]
    return "\n".join(out) + "\n"


def _jsonable(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    return o


def write_json(res: dict, path: str) -> None:
    with open(path, "w") as fh:
        json.dump(_jsonable(res), fh, indent=2)
        fh.write("\n")


def write_markdown(res: dict, path: str) -> None:
    with open(path, "w") as fh:
        fh.write(format_markdown(res))
