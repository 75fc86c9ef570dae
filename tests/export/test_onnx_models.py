"""Whole models through ONNX: the BN-paper MLP, the Fashion-MNIST CNN example, a functional residual network.

Each at batch sizes 1 and 37, against ``model.predict`` (rtol 1e-5 with the
output's scale as the floor, float32), as exported, with
``fold_batchnorm=True``, and after :func:`normlab.fold_batchnorm`; the
residual network also at every opset from 13 to the newest ``onnx`` knows.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import normlab  # noqa: E402
from normlab import layers as L  # noqa: E402
from normlab.export import DEFAULT_OPSET, to_onnx  # noqa: E402

from _onnx_harness import BATCHES, assert_matches, inputs, randomize, session  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _ops(proto) -> list:
    return [n.op_type for n in proto.graph.node]


def _bn_paper_mlp(placement: str, rng):
    """The paper's 3 x 100 sigmoid network (normlab.cli.demo), with exact population statistics of MNIST-like data."""
    from normlab.cli.demo import build_network

    model = build_network(True, placement=placement, seed=3)
    model.build((None, 784))
    randomize(model, rng)
    normlab.recompute_batchnorm_statistics(model, rng.random((256, 784), dtype=np.float32))
    return model


def _fashion_cnn(rng):
    spec = importlib.util.spec_from_file_location("_onnx_fashion_example", EXAMPLES / "fashion_mnist_cnn.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    model = mod.build_model(seed=0)
    randomize(model, rng)
    normlab.recompute_batchnorm_statistics(model, rng.random((64, 28, 28, 1), dtype=np.float32))
    return model


def _residual(rng):
    """Two residual blocks (identity and strided projection shortcuts), conv - BN - ReLU throughout."""
    inp = normlab.Input((12, 12, 3))

    def conv_bn(h, filters, kernel, strides=1):
        h = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(h)
        return L.BatchNormalization()(h)

    h = L.Activation("relu")(conv_bn(inp, 8, 3))
    r = conv_bn(L.Activation("relu")(conv_bn(h, 8, 3)), 8, 3)
    h = L.Activation("relu")(L.Add()([h, r]))
    h = L.MaxPooling2D(2)(h)
    r = conv_bn(L.Activation("relu")(conv_bn(h, 16, 3, strides=2)), 16, 3)
    h = L.Activation("relu")(L.Add()([conv_bn(h, 16, 1, strides=2), r]))
    h = L.GlobalAveragePooling2D()(h)
    out = L.Dense(10, activation="softmax")(L.Dropout(0.3)(h))
    model = normlab.Model(inp, out, seed=1)
    randomize(model, rng)
    return model


@pytest.mark.parametrize("placement", ["before", "after"])
def test_bn_paper_mlp(placement, rng):
    model = _bn_paper_mlp(placement, rng)
    x = rng.random((37, 784), dtype=np.float32)
    proto = to_onnx(model, None)
    assert _ops(proto).count("BatchNormalization") == 3
    folded_proto = to_onnx(model, None, fold_batchnorm=True)
    # "before": Dense(no bias) - BN folds into the Dense; "after": the BN follows a sigmoid and stays
    assert _ops(folded_proto).count("BatchNormalization") == (0 if placement == "before" else 3)
    folded = normlab.fold_batchnorm(model)
    folded_model_proto = to_onnx(folded, None)
    for n in BATCHES:
        assert_matches(model, proto, x[:n])
        assert_matches(model, folded_proto, x[:n])
        assert_matches(folded, folded_model_proto, x[:n])


def test_fashion_mnist_cnn(rng):
    model = _fashion_cnn(rng)
    proto = to_onnx(model, None)
    ops = _ops(proto)
    # one transpose into the convolutions' layout and one back before Flatten; the flip and dropout vanish
    assert ops.count("Transpose") == 2 and ops.count("Conv") == 3 and ops.count("BatchNormalization") == 4
    folded_proto = to_onnx(model, None, fold_batchnorm=True)
    assert "BatchNormalization" not in _ops(folded_proto)
    folded = normlab.fold_batchnorm(model)
    folded_model_proto = to_onnx(folded, None)
    for n in BATCHES:
        x = rng.random((n, 28, 28, 1), dtype=np.float32)
        assert_matches(model, proto, x)
        assert_matches(model, folded_proto, x)
        assert_matches(folded, folded_model_proto, x)


def test_functional_residual_network(rng):
    model = _residual(rng)
    proto = to_onnx(model, None)
    assert _ops(proto).count("Transpose") == 1  # into the channels-first layout; the pooled output needs none
    folded_proto = to_onnx(model, None, fold_batchnorm=True)
    assert "BatchNormalization" not in _ops(folded_proto)
    for n in BATCHES:
        x = inputs(model, rng, n)
        assert_matches(model, proto, x)
        assert_matches(model, folded_proto, x)


def _norm_zoo(rng):
    """Every normalization family and gelu, whose ONNX form depends on the opset."""
    model = normlab.Sequential([
        normlab.Input((6, 6, 3)),
        L.Conv2D(8, 3, padding="same", activation="gelu"),
        L.BatchNormalization(), L.GroupNormalization(4), L.InstanceNormalization(),
        L.LayerNormalization(), L.RMSNormalization(), L.UnitNormalization(),
        L.Flatten(), L.Dense(8, activation="gelu"), L.LayerNormalization(), L.RMSNormalization(),
        L.Dense(4, activation="softmax"),
    ])
    randomize(model, rng)
    return model


def test_every_opset(rng):
    newest = onnx.defs.onnx_opset_version()
    models = [_residual(rng), _norm_zoo(rng)]
    ran = []
    for opset in range(13, newest + 1):
        for model in models:
            proto = to_onnx(model, None, opset=opset)
            assert proto.opset_import[0].version == opset
            try:
                session(proto)
            except Exception as exc:  # an onnxruntime older than the onnx package (opset or IR version)
                if "opset" in str(exc).lower() or "ir version" in str(exc).lower():
                    continue
                raise
            for n in BATCHES:
                assert_matches(model, proto, inputs(model, rng, n))
            ran.append(opset)
    assert set(range(13, 22)) <= set(ran)  # onnxruntime >= 1.16 runs these


def test_native_operators_by_opset(rng):
    model = _norm_zoo(rng)
    assert {"LayerNormalization", "Gelu", "RMSNormalization"}.isdisjoint(_ops(to_onnx(model, None, opset=13)))
    ops17 = _ops(to_onnx(model, None, opset=17))
    assert "LayerNormalization" in ops17 and "Gelu" not in ops17 and "RMSNormalization" not in ops17
    ops23 = _ops(to_onnx(model, None, opset=23))
    assert {"LayerNormalization", "Gelu", "RMSNormalization", "InstanceNormalization"} <= set(ops23)
    assert "GroupNormalization" not in ops23  # decomposed on purpose (see normlab.export._normalization)
    assert DEFAULT_OPSET == 17
