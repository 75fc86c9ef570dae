"""Every layer normlab has, through Keras 3 ``.keras`` files both ways (normlab.models.keras_format).

Each case builds its model from one function of a namespace: ``make(normlab)``
and ``make(keras)`` build the same model in either library (normlab takes
Keras's names and arguments), so one case checks

* normlab -> ``.keras`` -> normlab: the same predictions, bit for bit, and the same config;
* normlab -> Keras (live): ``keras.saving.load_model`` predicts within 1e-6 relative (float32), and
  Keras's file of it reads back into normlab as well;
* Keras -> normlab (live): a model Keras built from the same function, with its own random weights,
  saved by Keras, predicts the same in normlab, and its config is the one normlab builds itself.

Layers Keras 3 lacks, and arguments it lacks, are refused on saving with an error naming the layer.
"""

import importlib.util
import inspect
import json
import os

import numpy as np
import pytest

import normlab
from normlab.layers.base import registry
from normlab.models._keras_layers import _SAVE_SPECS, NOT_IN_KERAS
from normlab.models.keras_format import load_keras, save_keras

try:
    import h5py
except ImportError:  # reading and writing .keras files needs it
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="h5py is not installed (pip install 'normlab[keras]')")

# Keras and normlab both compute in float32; the issue's bar is 1e-6 relative (to the outputs' scale)
RTOL = 1e-6


def seq(shape, *makers):
    """A Sequential case: input shape (no batch axis) and ``ns -> [layers]``."""
    return ("seq", shape, lambda ns: [m(ns) for m in makers])


def graph(shape, make):
    """A functional case: input shape and ``(ns, input tensor) -> output tensor``."""
    return ("graph", shape, make)


_BN_CONSTRAINTS = "gamma_constraint" in inspect.signature(normlab.layers.BatchNormalization.__init__).parameters


def _two(ns, inp, units=4):
    return [ns.layers.Dense(units)(inp), ns.layers.Dense(units, use_bias=False)(inp)]


CASES = {
    "Dense": seq((5,), lambda ns: ns.layers.Dense(4, activation="elu", kernel_initializer="he_normal",
                                                  kernel_regularizer=ns.regularizers.L1L2(1e-3, 1e-4),
                                                  kernel_constraint=ns.constraints.MaxNorm(1.5),
                                                  bias_constraint="non_neg"),
                 lambda ns: ns.layers.Dense(3, activation="sigmoid", use_bias=False,
                                            kernel_constraint=ns.constraints.MinMaxNorm(0.5, 1.0, rate=0.5))),
    "Conv1D": seq((9, 4), lambda ns: ns.layers.Conv1D(4, 3, strides=2, padding="same", groups=2,
                                                      kernel_constraint="unit_norm"),
                  lambda ns: ns.layers.Conv1D(2, 2, padding="causal", dilation_rate=2)),
    "Conv2D": seq((7, 7, 4), lambda ns: ns.layers.Conv2D(4, (3, 2), strides=(2, 1), padding="same", groups=4),
                  lambda ns: ns.layers.Conv2D(2, 2, dilation_rate=2, activation="tanh")),
    "Conv2D-channels_first": seq((3, 6, 5), lambda ns: ns.layers.Conv2D(4, 3, padding="same",
                                                                        data_format="channels_first"),
                                 lambda ns: ns.layers.Conv2D(2, 2, groups=2, data_format="channels_first")),
    "Conv1D-channels_first": seq((2, 8), lambda ns: ns.layers.Conv1D(3, 3, data_format="channels_first")),
    "Identity": seq((3,), lambda ns: ns.layers.Identity()),
    "BatchNormalization": seq((6,), lambda ns: ns.layers.BatchNormalization(scale=False),
                              lambda ns: ns.layers.BatchNormalization(center=False)),
    # Keras builds synchronized=True on its TensorFlow backend only
    "BatchNormalization-synchronized": seq((6,), lambda ns: ns.layers.BatchNormalization(synchronized=True)),
    "BatchNormalization-axis": seq((4, 3), lambda ns: ns.layers.BatchNormalization(axis=1, momentum=0.5,
                                                                                   epsilon=1e-5)),
    # Keras's beta/gamma constraints, once normlab's BatchNormalization takes them
    **({"BatchNormalization-constraints": seq((5,), lambda ns: ns.layers.BatchNormalization(
        beta_constraint="max_norm", gamma_constraint=ns.constraints.NonNeg()))} if _BN_CONSTRAINTS else {}),
    "BatchNormalization-renorm": seq((5,), lambda ns: ns.layers.BatchNormalization(
        renorm=True, renorm_clipping={"rmax": 2.0, "rmin": 0.5, "dmax": 1.0})),
    "LayerNormalization": seq((4, 6), lambda ns: ns.layers.LayerNormalization(epsilon=1e-5,
                                                                              gamma_constraint="non_neg"),
                              lambda ns: ns.layers.LayerNormalization(axis=[1, 2], beta_constraint="max_norm"),
                              lambda ns: ns.layers.LayerNormalization(rms_scaling=True)),
    "GroupNormalization": seq((5, 5, 4), lambda ns: ns.layers.GroupNormalization(groups=2,
                                                                                 gamma_constraint="non_neg"),
                              lambda ns: ns.layers.GroupNormalization(groups=-1, center=False)),
    # normlab's InstanceNormalization is Keras's GroupNormalization(groups=-1)
    "InstanceNormalization": seq((5, 5, 3), lambda ns: ns.layers.InstanceNormalization(beta_initializer="ones")
                                 if ns is normlab else ns.layers.GroupNormalization(groups=-1,
                                                                                    beta_initializer="ones")),
    "RMS-Unit": seq((6,), lambda ns: ns.layers.RMSNormalization(), lambda ns: ns.layers.UnitNormalization()),
    "dropout": seq((6,), lambda ns: ns.layers.Dropout(0.5, seed=3), lambda ns: ns.layers.AlphaDropout(0.1),
                   lambda ns: ns.layers.GaussianNoise(0.3), lambda ns: ns.layers.GaussianDropout(0.2),
                   lambda ns: ns.layers.ActivityRegularization(l1=0.01, l2=0.1)),
    "SpatialDropout1D": seq((4, 3), lambda ns: ns.layers.SpatialDropout1D(0.3)),
    "SpatialDropout2D": seq((4, 4, 3), lambda ns: ns.layers.SpatialDropout2D(0.3),
                            lambda ns: ns.layers.SpatialDropout2D(0.2, data_format="channels_first")),
    "SpatialDropout3D": seq((2, 3, 3, 2), lambda ns: ns.layers.SpatialDropout3D(0.3, seed=1)),
    "Activation": seq((6,), lambda ns: ns.layers.Activation("gelu"), lambda ns: ns.layers.Activation("softmax")),
    "activation-layers": seq((6,), lambda ns: ns.layers.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2),
                             lambda ns: ns.layers.LeakyReLU(), lambda ns: ns.layers.LeakyReLU(negative_slope=0.05),
                             lambda ns: ns.layers.ELU(alpha=0.7), lambda ns: ns.layers.ReLU()),
    "Softmax": seq((3, 4), lambda ns: ns.layers.Softmax(axis=1), lambda ns: ns.layers.Softmax(axis=[1, 2])),
    "PReLU": seq((4, 3), lambda ns: ns.layers.PReLU(alpha_initializer="ones", alpha_constraint="non_neg"),
                 lambda ns: ns.layers.PReLU(shared_axes=[1])),
    "Flatten-Reshape": seq((4, 3), lambda ns: ns.layers.Flatten(), lambda ns: ns.layers.Reshape((2, 6)),
                           lambda ns: ns.layers.Permute((2, 1))),
    "RepeatVector": seq((5,), lambda ns: ns.layers.RepeatVector(3)),
    "1D-reshaping": seq((8, 3), lambda ns: ns.layers.Cropping1D((1, 2)), lambda ns: ns.layers.ZeroPadding1D(2),
                        lambda ns: ns.layers.UpSampling1D(3)),
    "2D-reshaping": seq((6, 5, 2), lambda ns: ns.layers.Cropping2D(((1, 0), (0, 2))),
                        lambda ns: ns.layers.ZeroPadding2D(((1, 2), (0, 1))),
                        lambda ns: ns.layers.UpSampling2D((2, 1)),
                        lambda ns: ns.layers.UpSampling2D(2, interpolation="bilinear")),
    "2D-reshaping-channels_first": seq((2, 6, 5), lambda ns: ns.layers.Cropping2D(1, data_format="channels_first"),
                                       lambda ns: ns.layers.ZeroPadding2D(1, data_format="channels_first"),
                                       lambda ns: ns.layers.UpSampling2D(data_format="channels_first")),
    "3D-reshaping": seq((4, 5, 4, 2), lambda ns: ns.layers.Cropping3D(((1, 0), (0, 1), (1, 1))),
                        lambda ns: ns.layers.ZeroPadding3D(1), lambda ns: ns.layers.UpSampling3D((1, 2, 1))),
    "3D-reshaping-channels_first": seq((2, 4, 5, 3), lambda ns: ns.layers.Cropping3D(1, data_format="channels_first"),
                                       lambda ns: ns.layers.ZeroPadding3D(((0, 1), (1, 0), (0, 2)),
                                                                          data_format="channels_first"),
                                       lambda ns: ns.layers.UpSampling3D((2, 1, 1), data_format="channels_first"),
                                       lambda ns: ns.layers.SpatialDropout3D(0.2, data_format="channels_first")),
    "Flatten-channels_first": seq((3, 4, 2), lambda ns: ns.layers.Flatten(data_format="channels_first"),
                                  lambda ns: ns.layers.Dense(2)),
    "Pooling1D": seq((8, 3), lambda ns: ns.layers.MaxPooling1D(2),
                     lambda ns: ns.layers.AveragePooling1D(2, strides=1, padding="same"),
                     lambda ns: ns.layers.GlobalAveragePooling1D(keepdims=True),
                     lambda ns: ns.layers.GlobalMaxPooling1D()),
    "Pooling2D": seq((8, 8, 3), lambda ns: ns.layers.MaxPooling2D(padding="same"),
                     lambda ns: ns.layers.AveragePooling2D(3, strides=2),
                     lambda ns: ns.layers.GlobalMaxPooling2D(keepdims=True), lambda ns: ns.layers.GlobalAveragePooling2D()),
    "Pooling-channels_first": seq((3, 8, 6), lambda ns: ns.layers.MaxPooling2D(data_format="channels_first"),
                                  lambda ns: ns.layers.AveragePooling2D(2, data_format="channels_first"),
                                  lambda ns: ns.layers.GlobalAveragePooling2D(data_format="channels_first")),
    "Pooling1D-channels_first": seq((3, 8), lambda ns: ns.layers.MaxPooling1D(data_format="channels_first"),
                                    lambda ns: ns.layers.GlobalMaxPooling1D(data_format="channels_first")),
    "Rescaling-Normalization": seq((2, 3), lambda ns: ns.layers.Rescaling(1 / 255.0, offset=-0.5),
                                   lambda ns: ns.layers.Normalization(),
                                   lambda ns: ns.layers.Normalization(mean=[0.5, 1, 2], variance=[4.0, 1, 2],
                                                                      invert=True)),
    "augmentation": seq((8, 8, 3), lambda ns: ns.layers.RandomFlip("horizontal", seed=1),
                        lambda ns: ns.layers.RandomRotation(0.1), lambda ns: ns.layers.RandomTranslation(
                            0.1, 0.2, fill_mode="constant"),
                        lambda ns: ns.layers.RandomZoom(0.2, interpolation="nearest")),
    "Add-Subtract": graph((4,), lambda ns, inp: ns.layers.Subtract()([ns.layers.Add()(_two(ns, inp)), inp])),
    "Average-Multiply": graph((4,), lambda ns, inp: ns.layers.Multiply()(
        [ns.layers.Average()(_two(ns, inp)), ns.layers.Dense(4)(inp)])),
    "Maximum-Minimum": graph((4,), lambda ns, inp: ns.layers.Concatenate()(
        [ns.layers.Maximum()(_two(ns, inp)), ns.layers.Minimum()(_two(ns, inp))])),
    "Dot": graph((4,), lambda ns, inp: ns.layers.Concatenate()(
        [ns.layers.Dot(axes=1)(_two(ns, inp)), ns.layers.Dot(axes=-1, normalize=True)(_two(ns, inp))])),
    "Dot-3D": graph((3, 4), lambda ns, inp: ns.layers.Dot(axes=(1, 2))(
        [ns.layers.Dense(5)(inp), ns.layers.Permute((2, 1))(ns.layers.Dense(3)(inp))])),
    "Concatenate-axis": graph((3, 4), lambda ns, inp: ns.layers.Concatenate(axis=1)(_two(ns, inp))),
}


def _activations():
    from normlab.models._keras_layers import _activation_names

    return [a for a in _activation_names() if a not in ("linear",)]


def _every_activation(ns, inp):
    """Every activation both libraries have, side by side (glu halves the last axis: an even width)."""
    return ns.layers.Concatenate()([ns.layers.Activation(a)(inp) for a in _activations()])


CASES["activations"] = graph((6,), _every_activation)


# ---------------------------------------------------------------- initializers, regularizers, constraints
OBJECTS = {
    "initializers": {"Constant": {"value": 0.5}, "GlorotNormal": {"seed": 1}, "GlorotUniform": {},
                     "HeNormal": {}, "HeUniform": {"seed": 2}, "Identity": {"gain": 2.0}, "LecunNormal": {},
                     "LecunUniform": {}, "Ones": {}, "Orthogonal": {"gain": 0.5, "seed": 2},
                     "RandomNormal": {"mean": 0.1, "stddev": 0.2, "seed": 3},
                     "RandomUniform": {"minval": -0.1, "maxval": 0.2}, "TruncatedNormal": {"stddev": 0.3},
                     "VarianceScaling": {"scale": 2.0, "mode": "fan_avg", "distribution": "uniform"},
                     "Zeros": {}},
    "regularizers": {"L1": {"l1": 0.01}, "L2": {"l2": 0.02}, "L1L2": {"l1": 0.01, "l2": 0.02},
                     "OrthogonalRegularizer": {"factor": 0.1, "mode": "columns"}},
    "constraints": {"MaxNorm": {"max_value": 2.0, "axis": 0}, "MinMaxNorm": {"min_value": 0.1, "max_value": 1.5,
                                                                             "rate": 0.5, "axis": 0},
                    "NonNeg": {}, "UnitNorm": {"axis": 0}},
}


def _object_model(ns):
    """A Dense(3) per initializer, regularizer and constraint normlab has, each on the kernel."""
    layers = []
    for module, classes in OBJECTS.items():
        arg = "kernel_" + module[:-1]
        for cls, kwargs in classes.items():
            layers.append(ns.layers.Dense(3, **{arg: getattr(getattr(ns, module), cls)(**kwargs)}))
    return layers


CASES["objects"] = seq((3,), *[(lambda ns, i=i: _object_model(ns)[i]) for i in range(23)])



# ---------------------------------------------------------------- building
def build(name, ns):
    """The case's model in ``ns`` (normlab or keras), built."""
    kind, shape, make = CASES[name]
    if kind == "seq":
        if ns is normlab:
            model = normlab.Sequential(make(ns))
            model.build((None,) + shape)
        else:
            model = ns.Sequential([ns.Input(shape)] + make(ns))
        return model
    inp = ns.Input(shape)
    return ns.Model(inp, make(ns, inp))


def randomize(model, seed=3):
    """Weights and statistics away from their initial values (variances positive, Keras's int count kept)."""
    rng = np.random.default_rng(seed)
    if not isinstance(model, normlab.models.base.BaseModel):  # a Keras model
        names = [w.path for w in model.weights]
        model.set_weights([
            w if w.dtype.kind in "iu" else
            (rng.uniform(0.5, 1.5, w.shape) if ("variance" in p or "stddev" in p)
             else rng.normal(0, 0.5, w.shape)).astype(w.dtype)
            for p, w in zip(names, model.get_weights())])
        for layer in model.layers:
            if type(layer).__name__ == "Normalization" and layer.input_mean is None:
                layer.finalize_state()  # Keras computes with adapted statistics once finalized (as loading does)
        return model
    for layer in model.layers:
        if getattr(layer, "input_mean", None) is not None:
            continue  # statistics from the config
        for key, value in list(layer.params.items()) + list(layer.buffers.items()):
            value[...] = (rng.uniform(0.5, 1.5, value.shape) if ("variance" in key or "stddev" in key)
                          else rng.normal(0, 0.5, value.shape))
    return model


def sample(name, n=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n,) + CASES[name][1]).astype(np.float32)


def close(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    scale = max(np.max(np.abs(a)), 1e-30)
    np.testing.assert_allclose(b, a, rtol=RTOL, atol=RTOL * scale)


def layer_configs(model):
    """The layers' configs, names left out, in one form where Keras writes the same value another way."""
    out = []
    for layer in model.layers:
        conf = json.loads(json.dumps(layer.get_config()))
        conf.pop("name")
        cls = type(layer).__name__
        if cls == "InstanceNormalization":
            cls, conf = "GroupNormalization", {"groups": -1, **conf}
        if conf.get("data_format", 0) is None:  # normlab's None is channels-last
            conf["data_format"] = "channels_last"
        if conf.get("activation", 0) == "linear":  # Keras's default, normlab's is None: the same function
            conf["activation"] = None
        if isinstance(conf.get("axis"), int) and cls != "Concatenate" and cls != "BatchNormalization":
            conf["axis"] = [conf["axis"]]  # Keras keeps the axes of these layers as a list
        if cls == "RandomRotation" and isinstance(conf["factor"], (int, float)):
            conf["factor"] = [-conf["factor"], conf["factor"]]  # Keras's (lower, upper)
        if cls == "GroupNormalization" and conf["groups"] == -1:
            conf["groups"] = next(iter(layer.params.values())).shape[0]  # Keras writes the channel count it built
        for value in conf.values():
            if isinstance(value, dict) and value.get("class_name") == "Identity":
                value["config"].pop("gain", None)  # Keras 3.15's Identity initializer leaves gain out of its config
            if isinstance(value, dict) and "config" in value:  # Keras keeps its regularizers' factors in float32
                value["config"] = {k: float(np.float32(v)) if isinstance(v, float) else v
                                   for k, v in value["config"].items()}
        out.append((cls, conf))
    return out


# ---------------------------------------------------------------- coverage
def _classes_in_cases():
    seen = set()
    for name in CASES:
        for layer in build(name, normlab).layers:
            seen.add(type(layer).__name__)
    return seen


def test_every_registered_layer_is_mapped_or_refused():
    """A layer added to normlab must either map to Keras 3 or be listed as one Keras lacks."""
    # normlab's own classes (a test may register a layer of its own for a while)
    names = {n for n, c in registry._classes.items() if c.__module__.startswith("normlab.")}
    unmapped = sorted(names - set(_SAVE_SPECS) - set(NOT_IN_KERAS))
    assert not unmapped, f"layers neither mapped to Keras 3 nor refused: {unmapped}"
    missing = sorted(set(_SAVE_SPECS) - _classes_in_cases())
    assert not missing, f"mapped layers without a round-trip case here: {missing}"


def test_every_constructor_argument_is_mapped_or_declared_normlab_only():
    """An argument added to a mapped layer must be mapped to Keras's or declared one Keras lacks."""
    for name, spec in sorted(_SAVE_SPECS.items()):
        params = inspect.signature(registry._classes[name].__init__).parameters.values()
        unmapped = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                    and p.name not in ("self", "name", "trainable", "dtype")
                    and p.name not in spec.args + spec.optional and p.name not in spec.normlab_only
                and p.name not in spec.extra]
        assert not unmapped, f"{name}: arguments neither mapped to Keras 3 nor declared normlab-only: {unmapped}"


# ---------------------------------------------------------------- normlab -> .keras -> normlab
@pytest.mark.parametrize("name", sorted(CASES))
@needs_h5py
def test_layers_through_a_keras_file(name, tmp_path):
    model = randomize(build(name, normlab))
    x = sample(name)
    save_keras(model, tmp_path / "m.keras")
    back = load_keras(tmp_path / "m.keras")
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
    assert layer_configs(back) == layer_configs(model)


@pytest.mark.parametrize("make, match", [
    (lambda: normlab.layers.NoisyDense(3), "NoisyDense"),
    (lambda: normlab.layers.NormPropDense(3), "NormPropDense"),
    (lambda: normlab.layers.WeightNormalization(normlab.layers.Dense(3)), "WeightNormalization"),
    (lambda: normlab.layers.Dropout(0.5, scaling="inference"), "scaling='inference'"),
    (lambda: normlab.layers.SpatialDropout1D(0.5, scaling="inference"), "scaling='inference'"),
    (lambda: normlab.layers.BatchNormalization(virtual_batch_size=2), "virtual_batch_size"),
    (lambda: normlab.layers.BatchNormalization(unbiased_moving_variance=True), "unbiased_moving_variance"),
    (lambda: normlab.layers.BatchNormalization(batch_of_one="moving_statistics"), "batch_of_one"),
    (lambda: normlab.layers.RMSNormalization(gamma_initializer="zeros"), "gamma_initializer"),
    (lambda: normlab.layers.RMSNormalization(gamma_constraint="non_neg"), "gamma_constraint"),
    (lambda: normlab.layers.BatchNormalization(axis=[1, 2]), "one axis"),
])
@needs_h5py
def test_what_keras_lacks_is_refused_naming_the_layer(make, match, tmp_path):
    try:
        layer = make()
    except (TypeError, ValueError) as exc:  # an argument this layer does not take (yet)
        pytest.skip(f"not constructible here: {exc}")
    model = normlab.Sequential([normlab.layers.Dense(4), normlab.layers.Reshape((2, 2)), layer])
    model.build((None, 5))
    with pytest.raises(ValueError, match=match) as info:
        save_keras(model, tmp_path / "m.keras")
    assert f"({type(layer).__name__})" in str(info.value) and repr(layer.name) in str(info.value)
    assert not os.listdir(tmp_path)  # nothing written


@needs_h5py
def test_a_nested_model_is_refused_naming_it(tmp_path):
    inner = normlab.Sequential([normlab.Input((3,)), normlab.layers.Dense(2)], name="backbone")
    try:
        model = normlab.Sequential([normlab.Input((3,)), inner, normlab.layers.Dense(1)])
    except (TypeError, ValueError) as exc:  # models as layers not there (yet)
        pytest.skip(f"no nested models here: {exc}")
    with pytest.raises(ValueError, match=r"layer 'backbone' is a nested model \(Sequential\).*flat models only"):
        save_keras(model, tmp_path / "m.keras")
    assert not os.listdir(tmp_path)


@needs_h5py
def test_a_layer_keras_lacks_is_refused_by_model_save(tmp_path):
    model = normlab.Sequential([normlab.layers.NormPropDense(3)])
    model.build((None, 4))
    with pytest.raises(ValueError, match="NormPropDense.*no Keras 3 counterpart"):
        model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.npz")  # normlab's own format keeps it


# ---------------------------------------------------------------- live Keras
def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax" if importlib.util.find_spec("jax") else "torch")
    return pytest.importorskip("keras")


def keras_predict(model, x):
    import keras

    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.parametrize("name", sorted(CASES))
@needs_h5py
def test_layers_with_keras(name, tmp_path):
    keras = _keras()
    if name == "BatchNormalization-synchronized" and keras.backend.backend() != "tensorflow":
        pytest.skip("Keras takes synchronized=True on its TensorFlow backend only")
    x = sample(name)
    # normlab -> Keras -> normlab
    ours = randomize(build(name, normlab))
    expected = ours.predict(x, verbose=0)
    save_keras(ours, tmp_path / "n.keras")
    theirs = keras.saving.load_model(tmp_path / "n.keras")
    close(expected, keras_predict(theirs, x))
    theirs.save(tmp_path / "k.keras")
    again = load_keras(tmp_path / "k.keras")
    close(expected, again.predict(x, verbose=0))
    assert layer_configs(again) == layer_configs(ours)  # Keras took every argument as normlab meant it
    # Keras builds the same model itself: normlab reads its file, with the config normlab builds
    keras.utils.set_random_seed(0)
    native = randomize(build(name, keras), seed=5)
    native.save(tmp_path / "native.keras")
    read = load_keras(tmp_path / "native.keras")
    close(keras_predict(native, x), read.predict(x, verbose=0))
    assert layer_configs(read) == layer_configs(build(name, normlab))


# ---------------------------------------------------------------- Keras arguments normlab lacks, on reading
def _edited(tmp_path, make_layers, shape, edit):
    """A normlab-written .keras file whose first layer's config ``edit`` changes (as Keras would write it)."""
    import zipfile

    model = normlab.Sequential(make_layers())
    model.build((None,) + shape)
    save_keras(model, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(parts["config.json"])
    edit(config["config"]["layers"][1]["config"])
    parts["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "edited.keras", "w") as zf:
        for n, b in parts.items():
            zf.writestr(n, b)
    return tmp_path / "edited.keras"


def _constraint(cls, module="keras.constraints", **config):
    return {"module": module, "class_name": cls, "config": config, "registered_name": None}


@needs_h5py
@pytest.mark.parametrize("make, shape, edit, match", [
    pytest.param(lambda: [normlab.layers.BatchNormalization()], (3,),
                 lambda c: c.update(beta_constraint=_constraint("NonNeg")), "'beta_constraint'.*BatchNormalization",
                 marks=pytest.mark.skipif(_BN_CONSTRAINTS, reason="BatchNormalization takes constraints")),
    (lambda: [normlab.layers.Conv1D(2, 2)], (4, 3),
     lambda c: c.update(activity_regularizer={"module": "keras.regularizers", "class_name": "L2",
                                              "config": {"l2": 0.1}, "registered_name": None}),
     "'activity_regularizer'.*Conv1D"),
    (lambda: [normlab.layers.Dense(2)], (3,),
     lambda c: c.update(kernel_constraint=_constraint("MaxNorm", module="builtins")), "module 'builtins'"),
    (lambda: [normlab.layers.Dense(2)], (3,),
     lambda c: c.update(kernel_constraint=_constraint("Radial")), "constraint 'Radial'"),
    (lambda: [normlab.layers.Dense(2)], (3,),
     lambda c: c.update(lora_rank=4), "'lora_rank' is 4"),
    (lambda: [normlab.layers.RandomFlip()], (4, 4, 3),
     lambda c: c.update(data_format="channels_first"), "supports only 'channels_last'"),
    (lambda: [normlab.layers.Dense(2)], (3,),
     lambda c: c.update(activation="swish_custom"), "activation 'swish_custom'"),
    (lambda: [normlab.layers.PReLU()], (3,),
     lambda c: c.update(shared_axes=[1]), "could not be constructed|shape"),
])
def test_keras_arguments_normlab_lacks_are_refused(make, shape, edit, match, tmp_path):
    from normlab.models.saving import ModelFileError

    path = _edited(tmp_path, make, shape, edit)
    with pytest.raises(ModelFileError, match=match):
        load_keras(path)


def test_every_initializer_regularizer_and_constraint_is_covered():
    from normlab.models._keras_common import KERAS_OBJECTS

    for module, classes in OBJECTS.items():
        have = set(getattr(normlab, module).registry._classes)
        assert sorted(have & set(KERAS_OBJECTS[f"keras.{module}"])) == sorted(classes)
    assert sum(len(c) for c in OBJECTS.values()) == 23


@needs_h5py
def test_an_object_keras_lacks_is_refused(tmp_path, monkeypatch):
    from normlab.models import _keras_common

    monkeypatch.setitem(_keras_common.KERAS_OBJECTS, "keras.constraints", ("MaxNorm",))
    model = normlab.Sequential([normlab.layers.Dense(2, bias_constraint="non_neg", name="dense")])
    model.build((None, 3))
    with pytest.raises(ValueError, match=r"layer 'dense' \(Dense\) argument 'bias_constraint' uses the constraint "
                                         r"'NonNeg', which Keras 3 does not have"):
        save_keras(model, tmp_path / "m.keras")
