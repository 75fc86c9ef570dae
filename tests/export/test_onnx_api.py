"""to_onnx's options, file, errors and extension point; ``model.export``; the scikit-learn estimators."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import normlab  # noqa: E402
from normlab import layers as L  # noqa: E402
from normlab.export import ExportError, register_converter, supported_layers, to_onnx  # noqa: E402

from _onnx_harness import assert_matches, inputs, randomize, run, session  # noqa: E402


def _mlp(rng, dtype=None, name="mlp"):
    model = normlab.Sequential([
        normlab.Input((5,)),
        L.Dense(8, use_bias=False, dtype=dtype), L.BatchNormalization(dtype=dtype), L.Activation("relu", dtype=dtype),
        L.LayerNormalization(dtype=dtype), L.Dense(3, activation="softmax", dtype=dtype),
    ], name=name)
    randomize(model, rng)
    return model


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_defaults_dynamic_batch_and_names(rng):
    model = _mlp(rng)
    proto = to_onnx(model, None)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("input", "output")
    assert _dims(inp) == ["batch", 5] and _dims(out) == ["batch", 3]
    assert proto.opset_import[0].version == 17 and proto.producer_name == "normlab"
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["normlab_model"] == "Sequential"
    onnx.checker.check_model(proto, full_check=True)


def test_chosen_names_and_fixed_batch(rng):
    model = _mlp(rng)
    proto = to_onnx(model, None, input_name="features", output_name="probabilities", batch_size=4)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("features", "probabilities")
    assert _dims(inp) == [4, 5] and _dims(out) == [4, 3]
    assert_matches(model, proto, inputs(model, rng, 4), input_name="features")


def test_layer_named_like_the_io(rng):
    model = normlab.Sequential([normlab.Input((3,)), L.Dense(4, name="input"), L.Dense(2, name="output")])
    proto = to_onnx(model, None)
    assert_matches(model, proto, inputs(model, rng, 5))


def test_writes_the_file_atomically(rng, tmp_path):
    model = _mlp(rng)
    path = tmp_path / "model.onnx"
    proto = to_onnx(model, path)
    assert os.listdir(tmp_path) == ["model.onnx"]
    loaded = onnx.load(str(path))
    assert loaded.SerializeToString() == proto.SerializeToString()
    x = inputs(model, rng, 37)
    got = session(loaded).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_float64_model(rng):
    model = _mlp(rng, dtype="float64")
    proto = to_onnx(model, None)
    x = inputs(model, rng, 37, np.float64)
    got, ref = run(proto, x), model.predict(x, verbose=0)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    # or as float32 for a float32 runtime
    proto32 = to_onnx(model, None, dtype="float32")
    got32 = run(proto32, x.astype(np.float32))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_model_built_on_its_first_batch(rng):
    model = normlab.Sequential([L.Conv2D(3, 3), L.Flatten(), L.Dense(2)])
    model.predict(rng.normal(size=(2, 5, 5, 1)).astype(np.float32), verbose=0)
    randomize(model, rng)
    assert_matches(model, to_onnx(model, None), rng.normal(size=(37, 5, 5, 1)).astype(np.float32))


def test_functional_model_with_open_spatial_sizes(rng):
    """An Input with None sizes: the convolutions pad "same" as SAME_UPPER; any image size runs."""
    inp = normlab.Input((None, None, 2))
    h = L.Conv2D(4, 3, strides=2, padding="same")(inp)
    h = L.MaxPooling2D(3, strides=2, padding="same")(h)
    out = L.GlobalAveragePooling2D()(h)
    model = normlab.Model(inp, out)
    model.predict(rng.normal(size=(2, 7, 9, 2)).astype(np.float32), verbose=0)  # built on its first batch
    randomize(model, rng)
    proto = to_onnx(model, None)
    assert _dims(proto.graph.input[0]) == ["batch", "input_dim1", "input_dim2", 2]
    for size in ((7, 9), (8, 8)):
        assert_matches(model, proto, rng.normal(size=(3,) + size + (2,)).astype(np.float32))


def test_identity_model(rng):
    model = normlab.Sequential([normlab.Input((3,)), L.Dropout(0.5)])
    proto = to_onnx(model, None)
    assert [n.op_type for n in proto.graph.node] == ["Identity"]
    assert_matches(model, proto, inputs(model, rng, 2))


@pytest.mark.parametrize("opset", [12, 10**3, "17", 17.0, True])
def test_invalid_opset(opset, rng):
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(normlab.InvalidParameterError) as info:
        to_onnx(_mlp(rng), None, opset=opset)
    assert str(info.value) == (f"The 'opset' parameter of to_onnx must be None or an int in the range "
                               f"[13, {newest}]. Got {opset!r} instead.")


@pytest.mark.parametrize("kwargs, message", [
    ({"fold_batchnorm": "yes"}, "The 'fold_batchnorm' parameter of to_onnx must be"),
    ({"batch_size": 0}, "The 'batch_size' parameter of to_onnx must be None or an int in the range [1, inf)"),
    ({"dtype": "float16"}, "The 'dtype' parameter of to_onnx must be"),
    ({"input_name": 3}, "The 'input_name' parameter of to_onnx must be"),
    ({"input_name": "x", "output_name": "x"}, "two different non-empty names"),
    ({"output_name": ""}, "two different non-empty names"),
])
def test_invalid_options(kwargs, message, rng):
    with pytest.raises(ValueError) as info:
        to_onnx(_mlp(rng), None, **kwargs)
    assert message in str(info.value)


def test_unbuilt_model_and_non_model():
    with pytest.raises(ValueError, match=r"to_onnx: model 'sequential\w*' is not built"):
        to_onnx(normlab.Sequential([L.Dense(2)]), None)
    with pytest.raises(TypeError, match="to_onnx: 'model' must be a normlab Sequential or Model"):
        to_onnx(L.Dense(2), None)


def test_nothing_is_written_when_export_fails(tmp_path):
    class Opaque(L.Layer):
        pass

    model = normlab.Sequential([normlab.Input((3,)), Opaque(name="opaque")])
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"layer 'opaque' \(Opaque\)"):
        to_onnx(model, path)
    assert os.listdir(tmp_path) == []


def test_without_onnx(monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"to_onnx needs the 'onnx' package: pip install 'normlab\[onnx\]'"):
        to_onnx(_mlp(rng), None)


def test_register_a_converter(monkeypatch, rng):
    from normlab.export import _convert

    monkeypatch.setattr(_convert, "CONVERTERS", dict(_convert.CONVERTERS))
    # a Layer subclass registers itself: keep Cube out of the registry other tests enumerate
    monkeypatch.setattr(L.registry, "_classes", dict(L.registry._classes))

    class Cube(L.Layer):
        def call(self, x, training):
            return x * x * x

    @register_converter(Cube)
    def _cube(g, layer, inputs, out_shape):
        (x,) = inputs
        square = g.node("Mul", [x.name, x.name], f"{layer.name}/square")
        return x._replace(name=g.node("Mul", [square, x.name], layer.name))

    assert "Cube" in supported_layers()
    model = normlab.Sequential([normlab.Input((4, 4, 2)), L.Conv2D(3, 3), Cube(), L.Flatten()])
    randomize(model, rng)
    assert_matches(model, to_onnx(model, None), inputs(model, rng, 37))
    with pytest.raises(TypeError, match="register_converter: expected layer classes"):
        register_converter("Cube")


def test_model_export_shortcut(rng, tmp_path):
    """``model.export(path)`` (Keras's name) is ``to_onnx(model, path)``; keyword options pass through."""
    model = _mlp(rng)
    path = tmp_path / "model.onnx"
    model.export(str(path), input_name="x")
    loaded = onnx.load(str(path))
    assert loaded.graph.input[0].name == "x"
    assert_matches(model, loaded, inputs(model, rng, 37), input_name="x")
    with pytest.raises(ValueError, match="format"):
        model.export(str(tmp_path / "m.tf"), format="tf_saved_model")


def test_sklearn_estimator(rng):
    pytest.importorskip("sklearn")
    sk = pytest.importorskip("normlab.sklearn")
    x = rng.normal(size=(120, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 iterations do not converge
        est = sk.MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(x, y)
    for proto in (to_onnx(est, None), to_onnx(est.model_, None)):
        x32 = x[:37].astype(np.float32)
        assert_matches(est.model_, proto, x32)


@pytest.mark.parametrize("fold", [False, True])
def test_batchnorm_epsilon_zero_with_a_zero_moving_variance(rng, fold):
    """epsilon=0 and a zero moving variance: normlab outputs beta there; the export must too (finite, equal)."""
    model = normlab.Sequential([normlab.Input((5,)), L.Dense(4), L.BatchNormalization(epsilon=0.0)])
    randomize(model, rng)
    bn = model.layers[-1]
    bn.buffers["moving_variance"][1] = 0.0
    x = inputs(model, rng, 37)
    expected = model.predict(x, verbose=0)
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(expected[:, 1], np.broadcast_to(bn.params["beta"][1], (37,)))
    proto = to_onnx(model, None, fold_batchnorm=fold)
    got = run(proto, x)
    assert np.isfinite(got).all()
    assert_matches(model, proto, x)
