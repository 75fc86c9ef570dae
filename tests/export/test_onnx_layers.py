"""Every layer normlab registers, exported alone (and after a convolution, whose output ONNX holds channels first).

onnxruntime's outputs equal ``model.predict``'s (``_onnx_harness.assert_matches``:
rtol 1e-5 with the output's scale as the floor) at batch sizes 1 and 37, at
opsets 13, 17 (the default) and 23; ``onnx.checker`` passes inside ``to_onnx``.
"""

from __future__ import annotations

import inspect
import warnings

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import normlab  # noqa: E402
from normlab import activations  # noqa: E402
from normlab import layers as L  # noqa: E402
from normlab.export import ExportError, to_onnx  # noqa: E402
from normlab.layers.base import registry  # noqa: E402

from _onnx_harness import BATCHES, assert_matches, inputs, randomize  # noqa: E402

OPSETS = (13, 17, 23)


def c2():  # leaves its output channels first in the ONNX graph
    return L.Conv2D(4, 3, padding="same")


def c1():
    return L.Conv1D(4, 3, padding="same")


# id -> (per-sample input shape, a function making the layers)
CASES = {
    # linear
    "Dense": ((5,), lambda: [L.Dense(7)]),
    "Dense-rank3-tanh": ((4, 5), lambda: [L.Dense(7, activation="tanh")]),
    "Dense-no-bias-relu": ((5,), lambda: [L.Dense(3, use_bias=False, activation="relu")]),
    "Dense-after-conv": ((6, 6, 3), lambda: [c2(), L.Dense(5)]),
    "NoisyDense": ((5,), lambda: [L.NoisyDense(6, activation="relu")]),
    "NormPropDense": ((5,), lambda: [L.NormPropDense(6)]),
    "NormPropDense-linear-rank3": ((4, 5), lambda: [L.NormPropDense(6, activation="linear")]),
    "WeightNormalization-Dense": ((5,), lambda: [L.WeightNormalization(L.Dense(4, activation="sigmoid"))]),
    "WeightNormalization-Conv2D": ((6, 6, 3), lambda: [L.WeightNormalization(L.Conv2D(3, 3, padding="same"))]),
    "WeightNormalization-Conv1D": ((8, 3), lambda: [L.WeightNormalization(L.Conv1D(3, 3, activation="elu"))]),
    "Conv2D-valid": ((7, 7, 3), lambda: [L.Conv2D(4, 3)]),
    "Conv2D-same-stride2-odd": ((7, 8, 3), lambda: [L.Conv2D(4, 3, strides=2, padding="same", activation="relu")]),
    "Conv2D-same-even-kernel": ((7, 7, 2), lambda: [L.Conv2D(3, (2, 4), padding="same")]),
    "Conv2D-dilated-no-bias": ((9, 9, 2), lambda: [L.Conv2D(3, 3, dilation_rate=2, padding="same", use_bias=False)]),
    "Conv2D-stride-and-dilation": ((11, 11, 2), lambda: [L.Conv2D(3, 3, strides=2, dilation_rate=2)]),
    "Conv2D-Conv2D": ((6, 6, 3), lambda: [c2(), L.Conv2D(2, 3, strides=(1, 2))]),
    "Conv1D-valid": ((9, 3), lambda: [L.Conv1D(4, 3)]),
    "Conv1D-same-stride2": ((9, 3), lambda: [L.Conv1D(4, 4, strides=2, padding="same")]),
    "Conv1D-causal-dilated": ((9, 3), lambda: [L.Conv1D(4, 3, padding="causal", dilation_rate=2)]),
    # pooling
    "MaxPooling2D": ((6, 6, 3), lambda: [L.MaxPooling2D(2)]),
    "MaxPooling2D-same-odd": ((7, 7, 3), lambda: [L.MaxPooling2D(3, strides=2, padding="same")]),
    "AveragePooling2D-same": ((7, 7, 3), lambda: [L.AveragePooling2D(2, padding="same")]),
    "AveragePooling2D-after-conv": ((6, 6, 3), lambda: [c2(), L.AveragePooling2D((2, 3), strides=(2, 1))]),
    "MaxPooling1D": ((9, 3), lambda: [L.MaxPooling1D(2)]),
    "AveragePooling1D-same": ((9, 3), lambda: [L.AveragePooling1D(3, strides=2, padding="same")]),
    "MaxPooling2D-channels-first": ((3, 6, 6), lambda: [L.MaxPooling2D(2, data_format="channels_first")]),
    "AveragePooling1D-channels-first": ((3, 9), lambda: [L.AveragePooling1D(2, data_format="channels_first")]),
    "GlobalAveragePooling2D": ((6, 6, 3), lambda: [c2(), L.GlobalAveragePooling2D()]),
    "GlobalMaxPooling2D-keepdims": ((6, 6, 3), lambda: [c2(), L.GlobalMaxPooling2D(keepdims=True)]),
    "GlobalAveragePooling1D": ((9, 3), lambda: [L.GlobalAveragePooling1D()]),
    "GlobalMaxPooling1D-channels-first": ((3, 9), lambda: [L.GlobalMaxPooling1D(data_format="channels_first")]),
    "GlobalAveragePooling2D-cf-keepdims": (
        (3, 6, 6), lambda: [L.GlobalAveragePooling2D(data_format="channels_first", keepdims=True)]),
    # reshaping
    "Flatten": ((3, 4, 2), lambda: [L.Flatten()]),
    "Flatten-after-conv": ((6, 6, 3), lambda: [c2(), L.Flatten()]),
    "Flatten-channels-first": ((3, 4, 5), lambda: [L.Flatten(data_format="channels_first")]),
    "Flatten-channels-first-after-conv": ((6, 6, 3), lambda: [c2(), L.Flatten(data_format="channels_first")]),
    "Reshape": ((3, 4, 2), lambda: [L.Reshape((4, -1))]),
    "Reshape-after-conv": ((6, 6, 3), lambda: [c2(), L.Reshape((-1, 4))]),
    # batch normalization
    "BatchNormalization": ((5,), lambda: [L.BatchNormalization()]),
    "BatchNormalization-image-input": ((6, 6, 3), lambda: [L.BatchNormalization()]),
    "BatchNormalization-after-conv": ((6, 6, 3), lambda: [c2(), L.BatchNormalization(), L.Activation("relu")]),
    "BatchNormalization-after-conv1d": ((9, 3), lambda: [c1(), L.BatchNormalization()]),
    "BatchNormalization-axis1-rank3": ((4, 5), lambda: [L.BatchNormalization(axis=1)]),
    "BatchNormalization-two-axes": ((4, 5, 3), lambda: [L.BatchNormalization(axis=[1, 3])]),
    "BatchNormalization-two-axes-no-beta": ((4, 5, 3), lambda: [c2(), L.BatchNormalization(axis=[1, 3], center=False)]),
    "BatchNormalization-no-scale-no-center": ((5,), lambda: [L.BatchNormalization(scale=False, center=False)]),
    "BatchNormalization-after-Dense-rank3": ((4, 5), lambda: [L.Dense(6), L.BatchNormalization()]),
    "BatchNormalization-axis1-after-Dense-rank3": ((4, 5), lambda: [L.Dense(6), L.BatchNormalization(axis=1)]),
    "BatchNormalization-after-NoisyDense": ((5,), lambda: [L.NoisyDense(6, use_bias=False), L.BatchNormalization()]),
    "BatchNormalization-after-WeightNormalization": (
        (6, 6, 3), lambda: [L.WeightNormalization(L.Conv2D(4, 3)), L.BatchNormalization(center=False)]),
    "BatchNormalization-after-Dense-relu": ((5,), lambda: [L.Dense(6, activation="relu"), L.BatchNormalization()]),
    "BatchNormalization-renorm": ((5,), lambda: [L.BatchNormalization(renorm=True, virtual_batch_size=None)]),
    # per-sample normalization
    "LayerNormalization": ((5,), lambda: [L.LayerNormalization()]),
    "LayerNormalization-rank3": ((4, 5), lambda: [L.LayerNormalization()]),
    "LayerNormalization-trailing-axes": ((4, 5, 3), lambda: [L.LayerNormalization(axis=[2, 3])]),
    "LayerNormalization-middle-axis": ((4, 5, 3), lambda: [L.LayerNormalization(axis=1)]),
    "LayerNormalization-after-conv": ((6, 6, 3), lambda: [c2(), L.LayerNormalization()]),
    "LayerNormalization-after-conv-all-axes": ((6, 6, 3), lambda: [c2(), L.LayerNormalization(axis=[1, 2, 3])]),
    "LayerNormalization-no-affine": ((5,), lambda: [L.LayerNormalization(center=False, scale=False)]),
    "LayerNormalization-rms-scaling": ((4, 5), lambda: [L.LayerNormalization(rms_scaling=True)]),
    "RMSNormalization": ((5,), lambda: [L.RMSNormalization()]),
    "RMSNormalization-after-conv": ((6, 6, 3), lambda: [c2(), L.RMSNormalization()]),
    "RMSNormalization-middle-axes": ((4, 5, 3), lambda: [L.RMSNormalization(axis=[1, 2])]),
    "GroupNormalization": ((6, 6, 4), lambda: [L.GroupNormalization(2)]),
    "GroupNormalization-after-conv": ((6, 6, 3), lambda: [c2(), L.GroupNormalization(2)]),
    "GroupNormalization-rank2": ((8,), lambda: [L.GroupNormalization(4)]),
    "GroupNormalization-one-per-channel": ((6, 6, 4), lambda: [L.GroupNormalization(-1)]),
    "GroupNormalization-axis1": ((4, 6, 5), lambda: [L.GroupNormalization(2, axis=1)]),
    "GroupNormalization-no-affine": ((6, 6, 4), lambda: [L.GroupNormalization(2, center=False, scale=False)]),
    "InstanceNormalization": ((6, 6, 4), lambda: [L.InstanceNormalization()]),
    "InstanceNormalization-rank2": ((4,), lambda: [L.InstanceNormalization()]),
    "InstanceNormalization-after-conv1d": ((9, 3), lambda: [c1(), L.InstanceNormalization(center=False)]),
    "UnitNormalization": ((5,), lambda: [L.UnitNormalization()]),
    "UnitNormalization-axes": ((4, 5, 3), lambda: [L.UnitNormalization(axis=[1, 2])]),
    "UnitNormalization-after-conv": ((6, 6, 3), lambda: [c2(), L.UnitNormalization()]),
    # preprocessing
    "Rescaling": ((5,), lambda: [L.Rescaling(1 / 255, offset=-0.5)]),
    "Rescaling-arrays-after-conv": (
        (6, 6, 3), lambda: [c2(), L.Rescaling(scale=[1.0, 2.0, 3.0, 0.5], offset=[0.5, -1.0, 0.0, 2.0])]),
    "Normalization": ((5,), lambda: [L.Normalization(mean=[0.0, 1.0, -2.0, 3.0, 0.5], variance=[1.0, 4.0, 0.25, 9.0, 0.0])]),
    "Normalization-axis-None": ((4, 5), lambda: [L.Normalization(axis=None, mean=2.0, variance=4.0)]),
    "Normalization-invert-after-conv": (
        (6, 6, 3), lambda: [c2(), L.Normalization(mean=[1.0, 2.0, 3.0, 4.0], variance=[1.0, 2.0, 3.0, 4.0], invert=True)]),
    # the identity at inference
    "Dropout": ((5,), lambda: [L.Dense(4), L.Dropout(0.5)]),
    "SpatialDropout1D": ((9, 3), lambda: [c1(), L.SpatialDropout1D(0.5)]),
    "SpatialDropout2D": ((6, 6, 3), lambda: [c2(), L.SpatialDropout2D(0.5)]),
    "SpatialDropout3D": ((3, 4, 4, 2), lambda: [L.SpatialDropout3D(0.5), L.Dense(3)]),
    "AlphaDropout": ((5,), lambda: [L.AlphaDropout(0.5), L.Dense(3)]),
    "GaussianNoise": ((5,), lambda: [L.GaussianNoise(1.0), L.Dense(3)]),
    "GaussianDropout": ((5,), lambda: [L.GaussianDropout(0.5), L.Dense(3)]),
    "ActivityRegularization": ((5,), lambda: [L.Dense(3), L.ActivityRegularization(l1=0.01, l2=0.01)]),
    "RandomFlip": ((8, 8, 3), lambda: [L.RandomFlip(), c2()]),
    "RandomRotation": ((8, 8, 3), lambda: [L.RandomRotation(0.2), c2()]),
    "RandomTranslation": ((8, 8, 3), lambda: [L.RandomTranslation(0.1, 0.1), c2()]),
    "RandomZoom": ((8, 8, 3), lambda: [L.RandomZoom(0.1), c2()]),
    "Dropout-alone": ((5,), lambda: [L.Dropout(0.5)]),  # a model that is the identity at inference
}


# Keras's extra layers (another part of normlab adds them): tested where the class exists
_OPTIONAL = [
    ("ReLU", (5,), lambda L: [L.ReLU()]),
    ("ReLU-max-value-after-conv", (6, 6, 3), lambda L: [c2(), L.ReLU(max_value=0.5)]),
    ("ReLU-threshold-slope-max", (5,), lambda L: [L.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.5)]),
    ("ReLU-negative-slope", (4, 5), lambda L: [L.ReLU(negative_slope=0.2)]),
    ("LeakyReLU", (6, 6, 3), lambda L: [c2(), L.LeakyReLU()]),
    ("ELU", (5,), lambda L: [L.ELU(alpha=0.5)]),
    ("PReLU", (4, 5), lambda L: [L.PReLU()]),
    ("PReLU-shared-after-conv", (6, 6, 3), lambda L: [c2(), L.PReLU(shared_axes=[1, 2])]),
    ("Softmax", (4, 5), lambda L: [L.Softmax(axis=1)]),
    ("Softmax-after-conv", (6, 6, 3), lambda L: [c2(), L.Softmax()]),
    ("Softmax-two-axes-after-conv", (6, 6, 3), lambda L: [c2(), L.Softmax(axis=[1, 2])]),
    ("Identity", (5,), lambda L: [L.Dense(3), L.Identity()]),
    ("Permute", (4, 5), lambda L: [L.Permute((2, 1)), L.Dense(3)]),
    ("Permute-after-conv", (6, 5, 3), lambda L: [c2(), L.Permute((3, 1, 2)), L.Flatten()]),
    ("RepeatVector", (5,), lambda L: [L.RepeatVector(3)]),
    ("Cropping1D", (9, 3), lambda L: [L.Cropping1D((1, 2))]),
    ("Cropping2D-after-conv", (6, 6, 3), lambda L: [c2(), L.Cropping2D(((1, 0), (2, 1)))]),
    ("Cropping2D-channels-first", (3, 6, 6), lambda L: [L.Cropping2D(1, data_format="channels_first")]),
    ("Cropping3D", (4, 4, 4, 2), lambda L: [L.Cropping3D(1)]),
    ("ZeroPadding1D", (9, 3), lambda L: [L.ZeroPadding1D((1, 2))]),
    ("ZeroPadding2D-after-conv", (6, 6, 3), lambda L: [c2(), L.ZeroPadding2D(((1, 0), (2, 1)))]),
    ("ZeroPadding2D-channels-first", (3, 6, 6), lambda L: [L.ZeroPadding2D(1, data_format="channels_first")]),
    ("ZeroPadding3D", (3, 3, 3, 2), lambda L: [L.ZeroPadding3D(1)]),
    ("UpSampling1D", (4, 3), lambda L: [L.UpSampling1D(3)]),
    ("UpSampling2D-after-conv", (4, 5, 3), lambda L: [c2(), L.UpSampling2D((2, 3))]),
    ("UpSampling2D-bilinear", (4, 5, 3), lambda L: [L.UpSampling2D((2, 3), interpolation="bilinear")]),
    ("UpSampling2D-bilinear-after-conv", (4, 5, 3), lambda L: [c2(), L.UpSampling2D(2, interpolation="bilinear")]),
    ("UpSampling2D-channels-first", (3, 4, 5), lambda L: [L.UpSampling2D(2, data_format="channels_first")]),
    ("UpSampling3D", (2, 3, 2, 2), lambda L: [L.UpSampling3D(2)]),
]
for _case, _shape, _make in _OPTIONAL:
    if hasattr(L, _case.split("-")[0]):
        CASES[_case] = (_shape, (lambda make: lambda: make(L))(_make))


def _has_parameter(cls, name: str) -> bool:
    return name in inspect.signature(cls).parameters


# another change adds groups= and data_format="channels_first" to the convolutions: export them where present
if _has_parameter(L.Conv2D, "groups"):
    CASES["Conv2D-groups"] = ((6, 6, 4), lambda: [L.Conv2D(6, 3, groups=2, padding="same")])
    CASES["Conv1D-groups"] = ((9, 4), lambda: [L.Conv1D(4, 3, groups=4)])
    CASES["Conv2D-groups-BatchNormalization"] = (
        (6, 6, 4), lambda: [L.Conv2D(6, 3, groups=2, padding="same", use_bias=False), L.BatchNormalization()])


def _conv_channels_first_ok() -> bool:
    try:
        L.Conv2D(2, 3, data_format="channels_first")
    except (TypeError, ValueError):
        return False
    return True


if _conv_channels_first_ok():
    CASES["Conv2D-channels-first"] = (
        (3, 7, 7), lambda: [L.Conv2D(4, 3, strides=2, padding="same", data_format="channels_first"),
                            L.BatchNormalization(axis=1), L.Flatten(data_format="channels_first")])
    CASES["Conv1D-channels-first"] = ((3, 9), lambda: [L.Conv1D(4, 3, data_format="channels_first")])


def _branches(shape=(6, 6, 3)):
    """An input and three branches: two convolutions (channels first in ONNX) and a Dense (normlab's layout)."""
    inp = normlab.Input(shape)
    return inp, L.Conv2D(4, 3, padding="same")(inp), L.Dense(4)(inp), L.Conv2D(4, 1)(inp)


def _merge(make, n=2):
    def build():
        inp, *branches = _branches()
        return inp, make()(branches[:n])

    return build


# id -> a function returning (input, output) of a functional model
MERGES = {
    "Add": _merge(L.Add),
    "Add-three": _merge(L.Add, 3),
    "Subtract": _merge(L.Subtract),
    "Multiply-three": _merge(L.Multiply, 3),
    "Average-three": _merge(L.Average, 3),
    "Concatenate": _merge(L.Concatenate),
    "Concatenate-axis1": _merge(lambda: L.Concatenate(axis=1), 3),
}
if hasattr(L, "Maximum"):
    MERGES["Maximum-three"] = _merge(L.Maximum, 3)
    MERGES["Minimum"] = _merge(L.Minimum)
if hasattr(L, "Dot"):
    def _dots(axes, normalize, shapes):
        def build():
            inp = normlab.Input((6, 5))
            a, b = L.Dense(shapes[0])(inp), L.Conv1D(shapes[1], 3, padding="same")(inp)
            return inp, L.Dot(axes, normalize=normalize)([a, b])

        return build

    MERGES["Dot-last-axis"] = _dots(-1, False, (4, 4))
    MERGES["Dot-steps-normalized"] = _dots((1, 1), True, (4, 3))
    MERGES["Dot-cross-axes"] = _dots((1, 2), False, (4, 6))


def _model(case: str, rng):
    if case in MERGES:
        inp, out = MERGES[case]()
        model = normlab.Model(inp, out)
        randomize(model, rng)
        return model
    shape, make = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # LayerNormalization(rms_scaling=True) says what it computes
        model = normlab.Sequential([normlab.Input(shape), *make()])
    randomize(model, rng)
    return model


@pytest.mark.parametrize("case", sorted(CASES) + sorted(MERGES))
def test_layer_matches_onnxruntime(case, rng):
    model = _model(case, rng)
    for opset in OPSETS:
        proto = to_onnx(model, None, opset=opset)
        for n in BATCHES:
            assert_matches(model, proto, inputs(model, rng, n))


def _has_batchnorm(case: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return any(isinstance(layer, L.BatchNormalization) for layer in CASES[case][1]())


@pytest.mark.parametrize("case", [c for c in sorted(CASES) if _has_batchnorm(c)])
def test_folded_batchnorm_matches(case, rng):
    """``fold_batchnorm=True``: folded where a linear layer without activation feeds it over its outputs, else kept."""
    model = _model(case, rng)
    proto = to_onnx(model, None, fold_batchnorm=True)
    layers = model.layers
    def channels(layer, ndim):  # the axis of a linear layer's output units
        return 1 if getattr(layer, "data_format", None) == "channels_first" else ndim - 1

    foldable = any(isinstance(bn, L.BatchNormalization) and getattr(prev, "activation", "x") in (None, "linear")
                   and bn._feature_axes == (channels(prev, len(bn.input_shape)),)
                   for prev, bn in zip(layers, layers[1:]))
    kept = [n.op_type for n in proto.graph.node].count("BatchNormalization")
    assert kept == (0 if foldable else sum(isinstance(l, L.BatchNormalization) and len(l._feature_axes) == 1
                                           for l in layers))
    for n in BATCHES:
        assert_matches(model, proto, inputs(model, rng, n))


@pytest.mark.parametrize("name", activations.names())
def test_every_activation(name, rng):
    """In a Dense layer (normlab's layout) and as an Activation after a convolution (softmax: over the channels)."""
    for opset in (13, 17, 20):
        for shape, layers in (((5,), [L.Dense(6, activation=name)]), ((6, 6, 3), [c2(), L.Activation(name)])):
            model = normlab.Sequential([normlab.Input(shape), *layers])
            randomize(model, rng)
            proto = to_onnx(model, None, opset=opset)
            for n in BATCHES:
                assert_matches(model, proto, 3 * inputs(model, rng, n))


def _normlab_layer_classes() -> set:
    return {name for name, cls in registry._classes.items() if cls.__module__.startswith("normlab.")}


#: registered layers that to_onnx refuses, with the reason (none at present)
REFUSED: dict = {}


def test_every_registered_layer_is_exported_or_refused():
    """Each layer class normlab registers appears in a case above (or in REFUSED, with its reason)."""
    covered = set()
    for _, make in CASES.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for layer in make():
                covered.add(type(layer).__name__)
                if isinstance(layer, L.WeightNormalization):
                    covered.add(type(layer.layer).__name__)
    for build in MERGES.values():
        covered |= {type(layer).__name__ for layer in normlab.Model(*build()).layers}
    missing = _normlab_layer_classes() - covered - set(REFUSED)
    assert not missing, f"layers with no export test: {sorted(missing)}"


def test_refused_layers_name_themselves(rng):
    for name, reason in REFUSED.items():  # pragma: no cover - none at present
        raise AssertionError(f"{name}: {reason}")


def test_a_layer_without_converter_is_named(rng):
    class Doubler(L.Layer):
        def call(self, x, training):
            return 2 * x

    model = normlab.Sequential([normlab.Input((3,)), L.Dense(2), Doubler(name="twice")])
    with pytest.raises(ExportError, match=r"layer 'twice' \(Doubler\) cannot be exported to ONNX.*register_converter"):
        to_onnx(model, None)


def test_an_activation_without_onnx_form_is_named(monkeypatch):
    from normlab.kernels import activations as K

    model = normlab.Sequential([normlab.Input((3,)), L.Dense(2, name="head")])
    monkeypatch.setattr(model.layers[0], "activation", "made_up")
    with pytest.raises(ExportError, match=r"layer 'head' \(Dense\).*activation 'made_up' has no ONNX form"):
        to_onnx(model, None)
    assert "made_up" not in K.KERNELS
