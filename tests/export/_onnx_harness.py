"""What the export tests share: random weights, running a ModelProto in onnxruntime, the comparison.

The comparison (issue 24: "within 1e-5 relative, float32"): every output
``o`` of onnxruntime and ``r`` of ``model.predict`` satisfy
``|o - r| <= 1e-5 * (|r| + max|r|)``, i.e. ``assert_allclose`` with
``rtol=1e-5`` and ``atol=1e-5 * max|r|``: relative to the value, with the
output's own scale as the floor where a value is near zero.
"""

from __future__ import annotations

import numpy as np

RTOL = 1e-5
BATCHES = (1, 37)


def randomize(model, rng) -> None:
    """Weights and statistics away from their initial values (gamma != 1, beta != 0, moving stats not 0/1)."""
    for layer in model.layers:
        for key, value in layer.params.items():
            if key in ("gamma", "g"):
                value[...] = rng.uniform(0.5, 1.5, value.shape)
            elif key in ("beta", "bias", "mu_bias"):
                value[...] = rng.normal(0, 0.3, value.shape)
            elif key == "alpha":  # PReLU's slopes (0 at init)
                value[...] = rng.uniform(0.1, 0.5, value.shape)
        for key, value in layer.buffers.items():
            if "variance" in key or "stddev" in key:
                value[...] = rng.uniform(0.5, 2.0, value.shape)
            elif "mean" in key:
                value[...] = rng.normal(0, 0.5, value.shape)


def session(proto):
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run(proto, x, input_name: str = "input"):
    return session(proto).run(None, {input_name: x})[0]


def relative_error(got, ref) -> float:
    """``max |o - r| / max |r|``: the figure the docs report."""
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), np.finfo(np.float32).tiny))


def assert_matches(model, proto, x, *, reference=None, input_name: str = "input") -> float:
    """onnxruntime's output for ``x`` equals ``model.predict(x)`` (or ``reference``) to RTOL; returns the error."""
    ref = model.predict(x, batch_size=len(x), verbose=0) if reference is None else reference
    got = run(proto, x, input_name)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())
    return relative_error(got, ref)


def inputs(model, rng, batch: int, dtype=np.float32):
    shape = tuple(model.input_shape[1:])
    return rng.normal(size=(batch,) + shape).astype(dtype)
