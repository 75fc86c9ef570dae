"""A catalogue of bad inputs to ``to_onnx`` / ``model.export``: the error each gets, and that nothing changes.

The standard: a clear error naming ``to_onnx``, the argument and what was
expected; nothing written at ``path`` (an existing file there is left as it
was) and the model never changed, whether the export fails or not.

Decided here (docs/onnx.md, "Errors"):

* a model whose weights hold NaN or inf is refused (``ExportError`` naming the
  layer and the weight), as ``save_model`` refuses it: its graph would compute
  NaN. So is a float64 weight beyond float32's range exported with
  ``dtype="float32"`` (it would become inf);
* ``path`` is checked before any work (a directory, a missing folder);
* a ``normlab.sklearn`` estimator before ``fit`` raises scikit-learn's
  ``NotFittedError``, as its ``predict`` does; ``est.model_`` before ``fit`` is
  an ``AttributeError`` (scikit-learn's convention: fitted attributes do not
  exist yet), raised by Python before ``to_onnx`` is called.
"""

from __future__ import annotations

import errno
import os
import pathlib
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import normlab  # noqa: E402
from normlab import layers as L  # noqa: E402
from normlab._validation import InvalidParameterError  # noqa: E402
from normlab.export import ExportError, to_onnx  # noqa: E402
from normlab.export import _onnx  # noqa: E402

from _onnx_harness import assert_matches, inputs, randomize, run  # noqa: E402

NEWEST = onnx.defs.onnx_opset_version()


def _mlp(rng, dtype=None):
    model = normlab.Sequential([
        normlab.Input((5,)), L.Dense(8, use_bias=False, dtype=dtype), L.BatchNormalization(dtype=dtype),
        L.Activation("relu", dtype=dtype), L.Dense(3, activation="softmax", dtype=dtype),
    ], name="mlp")
    randomize(model, rng)
    return model


def _cnn(rng, dtype=None):
    model = normlab.Sequential([
        normlab.Input((6, 6, 2)), L.Conv2D(4, 3, padding="same", use_bias=False, dtype=dtype),
        L.BatchNormalization(dtype=dtype), L.Flatten(dtype=dtype), L.Dense(3, dtype=dtype),
    ], name="cnn")
    randomize(model, rng)
    return model


def _snapshot(model) -> tuple:
    return (model.built, model.get_config(), [w.copy() for w in model.get_weights()],
            [(layer.name, layer.built, dict(layer.buffers)) for layer in model.layers])


def _assert_unchanged(model, snapshot) -> None:
    built, config, weights, layers = snapshot
    assert model.built == built and model.get_config() == config
    now = model.get_weights()
    assert len(now) == len(weights)
    for a, b in zip(now, weights):
        np.testing.assert_array_equal(a, b)
    assert [(layer.name, layer.built) for layer in model.layers] == [(n, b) for n, b, _ in layers]


@pytest.fixture
def no_conversion(monkeypatch):
    """Fails the test if to_onnx gets as far as converting a layer (for errors that must come first)."""
    def refuse(layer):
        raise AssertionError(f"to_onnx converted {layer.name!r} before refusing its arguments")

    monkeypatch.setattr(_onnx, "converter_for", refuse)


# ------------------------------------------------------------------ the model argument
def test_an_unbuilt_model_is_refused_and_stays_unbuilt(tmp_path):
    model = normlab.Sequential([L.Dense(4), L.Dense(2)], name="fresh")
    for call in (lambda: to_onnx(model, tmp_path / "m.onnx"), lambda: model.export(str(tmp_path / "m.onnx"))):
        with pytest.raises(ValueError, match=r"^to_onnx: model 'fresh' is not built; build it "
                                             r"\(model.build\(input_shape\)\), fit it or call it once first\.$"):
            call()
    assert not model.built and not any(layer.built for layer in model.layers)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("thing", [None, "model.onnx", 3, L.Dense(2), np.ones(3)], ids=repr)
def test_what_is_not_a_model(thing):
    with pytest.raises(TypeError, match=r"^to_onnx: 'model' must be a normlab Sequential or Model \(or a fitted "
                                        rf"normlab\.sklearn estimator\), got {type(thing).__name__}\.$"):
        to_onnx(thing)


def test_an_unsupported_layer_is_named_and_nothing_is_written(rng, tmp_path):
    class Doubler(L.Layer):
        def call(self, x, training):
            return 2 * x

    model = normlab.Sequential([normlab.Input((3,)), L.Dense(4, name="first"), Doubler(name="twice")])
    before = _snapshot(model)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the previous model")
    with pytest.raises(ExportError, match=r"^to_onnx: layer 'twice' \(Doubler\) cannot be exported to ONNX: there "
                                          r"is no converter for Doubler; add one with "
                                          r"normlab\.export\.register_converter\.$"):
        to_onnx(model, path)
    assert path.read_bytes() == b"the previous model" and os.listdir(tmp_path) == ["model.onnx"]
    _assert_unchanged(model, before)


def test_an_estimator_before_fit():
    pytest.importorskip("sklearn")
    from sklearn.exceptions import NotFittedError

    from normlab.sklearn import MLPClassifier, MLPRegressor

    for est in (MLPClassifier(hidden_layer_sizes=(4,)), MLPRegressor(hidden_layer_sizes=(4,))):
        with pytest.raises(NotFittedError, match=rf"^This {type(est).__name__} instance is not fitted yet"):
            to_onnx(est)
        # scikit-learn's convention: the fitted attribute does not exist yet (Python's AttributeError)
        with pytest.raises(AttributeError, match="model_"):
            to_onnx(est.model_)
        # NotFittedError is both, as scikit-learn makes it
        with pytest.raises(ValueError):
            to_onnx(est)
        with pytest.raises(AttributeError):
            to_onnx(est)


def test_a_foreign_estimator_is_not_a_model():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(TypeError, match="got LogisticRegression"):
        to_onnx(LogisticRegression())


# ------------------------------------------------------------------ options
BAD_OPTIONS = [
    ({"opset": 12}, f"The 'opset' parameter of to_onnx must be None or an int in the range [13, {NEWEST}]. Got 12"),
    ({"opset": NEWEST + 1}, f"The 'opset' parameter of to_onnx must be None or an int in the range [13, {NEWEST}]. "
                            f"Got {NEWEST + 1} instead."),
    ({"opset": -1}, "The 'opset' parameter of to_onnx must be None or an int"),
    ({"opset": 0}, "The 'opset' parameter of to_onnx must be None or an int"),
    ({"opset": 17.0}, "The 'opset' parameter of to_onnx must be None or an int"),
    ({"opset": "17"}, "The 'opset' parameter of to_onnx must be None or an int"),
    ({"opset": True}, "The 'opset' parameter of to_onnx must be None or an int"),
    ({"opset": np.bool_(True)}, "The 'opset' parameter of to_onnx must be None or an int"),
    ({"opset": float("nan")}, "The 'opset' parameter of to_onnx must be None or an int"),
    ({"input_name": 3}, "The 'input_name' parameter of to_onnx must be an instance of str. Got 3 instead."),
    ({"input_name": b"x"}, "The 'input_name' parameter of to_onnx must be an instance of str. Got b'x' instead."),
    ({"output_name": None}, "The 'output_name' parameter of to_onnx must be an instance of str. Got None instead."),
    ({"output_name": ["y"]}, "The 'output_name' parameter of to_onnx must be an instance of str."),
    ({"fold_batchnorm": 1}, "The 'fold_batchnorm' parameter of to_onnx must be a bool. Got 1 instead."),
    ({"fold_batchnorm": "yes"}, "The 'fold_batchnorm' parameter of to_onnx must be a bool."),
    ({"fold_batchnorm": None}, "The 'fold_batchnorm' parameter of to_onnx must be a bool."),
    ({"batch_size": 0}, "The 'batch_size' parameter of to_onnx must be None or an int in the range [1, inf). Got 0"),
    ({"batch_size": -4}, "The 'batch_size' parameter of to_onnx must be None or an int in the range [1, inf)."),
    ({"batch_size": True}, "The 'batch_size' parameter of to_onnx must be None or an int in the range [1, inf)."),
    ({"batch_size": 2.0}, "The 'batch_size' parameter of to_onnx must be None or an int in the range [1, inf)."),
    ({"batch_size": 2**63}, "The 'batch_size' parameter of to_onnx must be None or an int in the range "
                            "[1, 2**63 - 1] (an ONNX dimension is an int64). Got 9223372036854775808 instead."),
    ({"dtype": "float16"}, "The 'dtype' parameter of to_onnx must be None or one of 'float32', 'float64'. "
                           "Got 'float16' instead."),
    ({"dtype": np.float16}, "The 'dtype' parameter of to_onnx must be None or one of 'float32', 'float64'."),
    ({"dtype": "int32"}, "The 'dtype' parameter of to_onnx must be None or one of 'float32', 'float64'."),
    ({"dtype": int}, "The 'dtype' parameter of to_onnx must be None or one of 'float32', 'float64'."),
    ({"dtype": "f"}, None),  # NumPy's single-letter code for float32: accepted, see below
    ({"dtype": "not a dtype"}, "The 'dtype' parameter of to_onnx must be None or one of 'float32', 'float64'."),
    ({"dtype": 32}, "The 'dtype' parameter of to_onnx must be None or one of 'float32', 'float64'. Got 32"),
]


@pytest.mark.parametrize("kwargs, message", [c for c in BAD_OPTIONS if c[1] is not None], ids=repr)
def test_a_bad_option_is_refused_before_any_work(kwargs, message, rng, tmp_path, no_conversion):
    model = _mlp(rng)
    before = _snapshot(model)
    with pytest.raises(InvalidParameterError) as info:
        to_onnx(model, tmp_path / "m.onnx", **kwargs)
    assert str(info.value).startswith(message)
    assert os.listdir(tmp_path) == []
    _assert_unchanged(model, before)
    # the same through model.export
    with pytest.raises(InvalidParameterError):
        model.export(str(tmp_path / "m.onnx"), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"input_name": "x", "output_name": "x"}, "got 'x' and 'x'."),
    ({"input_name": ""}, "got '' and 'output'."),
    ({"output_name": ""}, "got 'input' and ''."),
    ({"input_name": "output"}, "got 'output' and 'output'."),
])
def test_names_that_collide_or_are_empty(kwargs, message, rng, no_conversion):
    with pytest.raises(ValueError, match=r"^to_onnx: 'input_name' and 'output_name' must be two different non-empty "
                                         r"names, " + message.replace("(", r"\(").replace(".", r"\.")):
        to_onnx(_mlp(rng), **kwargs)


def test_an_unknown_option_is_a_type_error(rng):
    with pytest.raises(TypeError, match="unexpected keyword argument 'opsets'"):
        to_onnx(_mlp(rng), opsets=17)
    with pytest.raises(TypeError, match="unexpected keyword argument 'opsets'"):
        _mlp(rng).export("m.onnx", opsets=17)
    with pytest.raises(ValueError, match=r"^Sequential\.export: the 'format' argument must be 'onnx' \(normlab "
                                         r"exports ONNX only\), got 'tf_saved_model'\.$"):
        _mlp(rng).export("m.onnx", format="tf_saved_model")


@pytest.mark.parametrize("kwargs", [
    {"opset": np.int64(17)}, {"opset": None}, {"opset": 13}, {"opset": NEWEST},
    {"dtype": np.float32}, {"dtype": np.dtype("float32")}, {"dtype": "f"}, {"fold_batchnorm": np.bool_(True)},
    {"batch_size": np.int32(3)}, {"input_name": np.str_("features")}, {"input_name": "a name with spaces/é"},
], ids=repr)
def test_accepted_spellings(kwargs, rng):
    model = _mlp(rng)
    proto = to_onnx(model, **kwargs)
    if "opset" in kwargs:  # running every opset is test_onnx_models's (an older onnxruntime may lack the newest)
        assert proto.opset_import[0].version == int(kwargs["opset"] or 17)
        onnx.checker.check_model(proto, full_check=True)
        return
    x = inputs(model, rng, int(kwargs.get("batch_size", 3)))
    assert_matches(model, proto, x, input_name=str(kwargs.get("input_name", "input")))


# ------------------------------------------------------------------ the path
def test_a_directory_is_refused_before_any_work(rng, tmp_path, no_conversion):
    with pytest.raises(IsADirectoryError) as info:
        to_onnx(_mlp(rng), tmp_path)
    assert info.value.errno == errno.EISDIR and info.value.filename == str(tmp_path)
    assert f"to_onnx: 'path' is a directory; expected a file name such as {str(tmp_path / 'model.onnx')!r}" in str(
        info.value)
    with pytest.raises(IsADirectoryError):
        _mlp(rng).export(str(tmp_path))
    assert os.listdir(tmp_path) == []  # no temporary file beside it either (before: "<dir>.tmp-<pid>")


def test_a_missing_folder_or_a_file_as_folder(rng, tmp_path, no_conversion):
    with pytest.raises(FileNotFoundError, match=r"to_onnx: the folder of 'path' \(.*nope'\) does not exist"):
        to_onnx(_mlp(rng), tmp_path / "nope" / "m.onnx")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"to_onnx: the folder of 'path' \(.*plain'\) is not a directory"):
        to_onnx(_mlp(rng), tmp_path / "plain" / "m.onnx")
    assert sorted(os.listdir(tmp_path)) == ["plain"]


@pytest.mark.parametrize("path, expected", [
    (3, "None, a str or a path-like object. Got 3 instead."),
    (["m.onnx"], "None, a str or a path-like object. Got ['m.onnx'] instead."),
    (3.5, "None, a str or a path-like object."),
    ("", "None or a file name. Got '' instead."),
    (b"", "None or a file name. Got b'' instead."),
])
def test_a_path_of_the_wrong_type(path, expected, rng, no_conversion):
    with pytest.raises(InvalidParameterError) as info:
        to_onnx(_mlp(rng), path)
    assert str(info.value).startswith(f"The 'path' parameter of to_onnx must be {expected}")


def test_str_bytes_and_pathlib_paths_write_the_same_file(rng, tmp_path):
    model = _mlp(rng)
    data = []
    for path in (str(tmp_path / "a.onnx"), os.fsencode(tmp_path / "b.onnx"), pathlib.Path(tmp_path / "c.onnx")):
        to_onnx(model, path)
    for name in ("a.onnx", "b.onnx", "c.onnx"):  # before, a bytes path was written as "b'...'.tmp-<pid>"
        data.append((tmp_path / name).read_bytes())
    assert data[0] == data[1] == data[2]
    assert sorted(os.listdir(tmp_path)) == ["a.onnx", "b.onnx", "c.onnx"]


def test_a_symbolic_link_is_followed_and_kept(rng, tmp_path):
    target = tmp_path / "real.onnx"
    target.write_bytes(b"old")
    (tmp_path / "link.onnx").symlink_to(target)
    proto = to_onnx(_mlp(rng), tmp_path / "link.onnx")
    assert (tmp_path / "link.onnx").is_symlink()
    assert target.read_bytes() == proto.SerializeToString()


def _refuse_writing(monkeypatch, err: int):
    from normlab.models import _saving_files

    def refuse(directory, base):
        raise OSError(err, os.strerror(err), os.path.join(directory, f".{base}.x.tmp"))

    monkeypatch.setattr(_saving_files, "_create_temporary", refuse)


@pytest.mark.parametrize("err, kind", [(errno.EACCES, PermissionError), (errno.EROFS, OSError),
                                       (errno.ENOSPC, OSError)])
def test_a_file_that_cannot_be_written_is_named_and_the_old_one_kept(err, kind, rng, tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous model")
    model = _mlp(rng)
    before = _snapshot(model)
    _refuse_writing(monkeypatch, err)
    with pytest.raises(kind) as info:
        to_onnx(model, path)
    assert info.value.errno == err and info.value.filename == str(path)
    assert str(info.value) == f"[Errno {err}] to_onnx: cannot write the model to 'path' ({os.strerror(err)}): " \
                              f"{str(path)!r}"
    assert path.read_bytes() == b"the previous model" and os.listdir(tmp_path) == ["m.onnx"]
    _assert_unchanged(model, before)


def test_a_write_that_fails_half_way_leaves_no_temporary_file(rng, tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous model")

    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        fh = real_fdopen(fd, *args, **kwargs)

        class Writer:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()
                return False

            def write(self, data):
                fh.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def __getattr__(self, name):
                return getattr(fh, name)

        return Writer()

    from normlab.models import _saving_files

    monkeypatch.setattr(_saving_files.os, "fdopen", fdopen)
    with pytest.raises(OSError, match=r"to_onnx: cannot write the model to 'path' \(No space left on device\)"):
        to_onnx(_mlp(rng), path)
    assert path.read_bytes() == b"the previous model" and os.listdir(tmp_path) == ["m.onnx"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder(rng, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"to_onnx: cannot write the model to 'path'"):
            to_onnx(_mlp(rng), folder / "m.onnx")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------------ NaN and inf
@pytest.mark.parametrize("where", [
    ("dense", "kernel", (0, 0), np.nan),
    ("dense_1", "bias", (1,), np.inf),
    ("batch_normalization", "moving_variance", (2,), np.nan),
    ("batch_normalization", "gamma", (0,), -np.inf),
], ids=lambda w: f"{w[0]}.{w[1]}={w[3]}")
@pytest.mark.parametrize("fold", [False, True])
def test_non_finite_weights_are_refused_naming_the_layer_and_the_weight(where, fold, rng, tmp_path):
    layer_name, key, index, value = where
    model = normlab.Sequential([
        normlab.Input((5,)), L.Dense(8, use_bias=False, name="dense"), L.BatchNormalization(name="batch_normalization"),
        L.Dense(3, name="dense_1"),
    ])
    randomize(model, rng)
    layer = model.get_layer(layer_name)
    store = layer.params if key in layer.params else layer.buffers
    store[key][index] = value
    before = _snapshot(model)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous model")
    cls = type(layer).__name__
    with pytest.raises(ExportError, match=rf"^to_onnx: layer '{layer_name}' \({cls}\) cannot be exported to ONNX: its "
                                          rf"weight '{key}' holds NaN or inf \(1 of {store[key].size} values\); a "
                                          r"model with non-finite weights computes NaN\.$"):
        to_onnx(model, path, fold_batchnorm=fold)
    assert path.read_bytes() == b"the previous model" and os.listdir(tmp_path) == ["m.onnx"]
    _assert_unchanged(model, before)


def test_non_finite_conv_weights_are_refused(rng):
    model = _cnn(rng)
    model.layers[0].params["kernel"][1, 1, 0, 2] = np.nan
    with pytest.raises(ExportError, match=r"layer 'conv2d\w*' \(Conv2D\) .* weight 'kernel' holds NaN or inf "
                                          r"\(1 of 72 values\)"):
        to_onnx(model)


def test_a_float64_weight_beyond_float32s_range_is_refused_with_dtype_float32(rng):
    model = _mlp(rng, dtype="float64")
    model.layers[0].params["kernel"][0, 0] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named in the error, not a RuntimeWarning of the cast
        with pytest.raises(ExportError, match=r"^to_onnx: layer 'dense\w*' \(Dense\) cannot be exported to ONNX: the "
                                              r"constant 'dense\w*/kernel' holds finite values beyond the range of "
                                              r"float32 \(largest magnitude 1e\+300\); the graph would compute inf or "
                                              r"NaN\.$"):
            to_onnx(model, dtype="float32")
    # as float64 it is a finite graph
    proto = to_onnx(model)
    x = inputs(model, rng, 4, np.float64)
    np.testing.assert_allclose(run(proto, x), model.predict(x, verbose=0), rtol=1e-12, atol=1e-14)


def test_nan_inputs_are_the_runtimes_business(rng):
    """The exported graph does not check its input (ONNX has no such step); NaN rows come out NaN, others not."""
    model = _mlp(rng)
    x = inputs(model, rng, 4)
    x[2, 1] = np.nan
    got = run(to_onnx(model), x)
    assert np.isnan(got[2]).all() and np.isfinite(got[[0, 1, 3]]).all()


# ------------------------------------------------------------------ float64 models and the model left alone
def test_float64_models(rng):
    mlp = _mlp(rng, dtype="float64")
    x = inputs(mlp, rng, 7, np.float64)
    proto = to_onnx(mlp)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    np.testing.assert_allclose(run(proto, x), mlp.predict(x, verbose=0), rtol=1e-12, atol=1e-14)
    with pytest.raises(Exception, match="float|double|tensor\\(float\\)|INVALID_ARGUMENT"):
        run(proto, x.astype(np.float32))  # onnxruntime checks the input's type
    cnn = _cnn(rng, dtype="float64")
    # onnxruntime's CPU provider has no float64 Conv (docs/onnx.md): such a model exports as float32 for it
    proto32 = to_onnx(cnn, dtype="float32")
    x = inputs(cnn, rng, 5, np.float64)
    ref = cnn.predict(x, verbose=0)
    np.testing.assert_allclose(run(proto32, x.astype(np.float32)), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    onnx.checker.check_model(to_onnx(cnn), full_check=True)  # the float64 graph itself is valid ONNX


@pytest.mark.parametrize("fold", [False, True])
def test_a_successful_export_leaves_the_model_as_it_was(fold, rng):
    model = _cnn(rng)
    before = _snapshot(model)
    x = inputs(model, rng, 3)
    ref = model.predict(x, verbose=0)
    to_onnx(model, fold_batchnorm=fold)
    _assert_unchanged(model, before)
    np.testing.assert_array_equal(model.predict(x, verbose=0), ref)
