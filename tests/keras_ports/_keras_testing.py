"""The parts of Keras's test harness that the file ports use, on NumPy and normlab.

A port keeps Keras's test classes and methods (their names are the
citation: ``<file>::<TestCase>.<test>``) and their bodies, with Keras-only
calls translated: ``ops``/``backend`` tensors become NumPy arrays (the
``ops`` and ``backend`` namespaces below), ``keras.losses`` becomes
``normlab.losses`` and so on. What stays Keras's own:

- ``assertAllClose`` (``atol = rtol = 1e-6`` unless given),
  ``assertAlmostEqual`` (``decimal=3``: ``np.testing.assert_almost_equal``),
  ``assertAllEqual``, ``assertLen``, ``assertDType``;
- ``run_class_serialization_test``: ``get_config`` / ``from_config`` and the
  registry's serialize / deserialize through JSON give the same config;
- absl's ``parameterized.named_parameters`` / ``parameters`` and Keras's
  ``parameterized.product``, expanded into one test per case (named as
  absl names them).
"""

from __future__ import annotations

import itertools
import json
import types
import unittest

import numpy as np

from normlab.metrics._base import MetricVariable

import normlab

# --------------------------------------------------------------------------- parameterized


def _mark(cases, named):
    def deco(fn):
        fn._keras_cases = (named, cases)
        return fn
    return deco


def named_parameters(*cases):
    if len(cases) == 1 and not isinstance(cases[0], (dict, tuple)):
        cases = tuple(cases[0])
    return _mark(cases, True)


def parameters(*cases):
    if len(cases) == 1 and isinstance(cases[0], (list, types.GeneratorType)):
        cases = tuple(cases[0])
    return _mark(cases, False)


def product(*dicts, **kwargs):
    if dicts:
        cases = [dict(d) for d in dicts[0]]
    else:
        keys = list(kwargs)
        cases = [dict(zip(keys, values)) for values in itertools.product(*(kwargs[k] for k in keys))]
    return _mark(tuple(cases), False)


def mark_cases(mark, *suffixes):
    """Apply a pytest ``mark`` to some generated cases only (their suffixes: the case index, or name)."""
    def deco(fn):
        marks = dict(getattr(fn, "_keras_case_marks", {}))
        marks.update({str(s): mark for s in suffixes})
        fn._keras_case_marks = marks
        return fn
    return deco


parameterized = types.SimpleNamespace(named_parameters=named_parameters, parameters=parameters, product=product)


def _expand(cls):
    for name, fn in list(vars(cls).items()):
        spec = getattr(fn, "_keras_cases", None)
        if spec is None:
            continue
        named, cases = spec
        delattr(cls, name)
        for i, case in enumerate(cases):
            if named:
                if isinstance(case, dict):
                    case = dict(case)
                    suffix = case.pop("testcase_name")
                    args, kwargs = (), case
                else:
                    suffix, args, kwargs = case[0], tuple(case[1:]), {}
            else:
                suffix = str(i)
                args, kwargs = ((), case) if isinstance(case, dict) else (
                    (tuple(case) if isinstance(case, (tuple, list)) else (case,)), {})

            def test(self, _fn=fn, _args=args, _kwargs=kwargs):
                return _fn(self, *_args, **_kwargs)

            test.__name__ = f"{name}_{suffix}" if named else f"{name}{suffix}"
            for attr in ("pytestmark",):
                if hasattr(fn, attr):
                    setattr(test, attr, getattr(fn, attr))
            case_mark = getattr(fn, "_keras_case_marks", {}).get(str(suffix))
            if case_mark is not None:
                test = case_mark(test)
            setattr(cls, test.__name__, test)


# --------------------------------------------------------------------------- TestCase

_REGISTRIES = (
    (normlab.losses.Loss, normlab.losses.registry),
    (normlab.metrics.Metric, normlab.metrics.registry),
    (normlab.initializers.Initializer, normlab.initializers.registry),
    (normlab.regularizers.Regularizer, normlab.regularizers.registry),
    (normlab.constraints.Constraint, normlab.constraints.registry),
)


def _json(config):
    return json.dumps(config, sort_keys=True, default=lambda o: list(o) if isinstance(o, tuple) else repr(o))


class TestCase(unittest.TestCase):
    """Keras's ``testing.TestCase``, on NumPy."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _expand(cls)

    def assertAllClose(self, actual, desired, atol=1e-6, rtol=1e-6, tpu_atol=None, tpu_rtol=None, msg=None):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), atol=atol, rtol=rtol, err_msg=msg or "")

    def assertNotAllClose(self, x1, x2, atol=1e-6, rtol=1e-6, msg=None):
        try:
            self.assertAllClose(x1, x2, atol=atol, rtol=rtol)
        except AssertionError:
            return
        raise AssertionError(msg or f"The two values are close at all elements: {x1} and {x2}")

    def assertAlmostEqual(self, actual, desired, decimal=3, tpu_decimal=None, msg=None, places=None, delta=None):
        if places is not None:
            decimal = places
        if delta is not None:
            np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), atol=delta, rtol=0)
            return
        np.testing.assert_almost_equal(np.asarray(actual), np.asarray(desired), decimal=decimal, err_msg=msg or "")

    def assertAllEqual(self, actual, desired, msg=None):
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(desired), err_msg=msg or "")

    def assertLen(self, iterable, expected_len, msg=None):
        self.assertEqual(len(iterable), expected_len, msg=msg)

    def assertDType(self, x, dtype, msg=None):
        got = np.asarray(x).dtype.name if hasattr(x, "dtype") else backend.standardize_dtype(type(x))
        self.assertEqual(got, backend.standardize_dtype(dtype), msg=msg)

    def run_class_serialization_test(self, instance, custom_objects=None):
        cls = type(instance)
        config = instance.get_config()
        revived = cls.from_config(json.loads(_json(config)))
        self.assertEqual(_json(config), _json(revived.get_config()))
        for base, registry in _REGISTRIES:
            if isinstance(instance, base):
                revived = registry.deserialize(json.loads(_json(registry.serialize(instance))))
                self.assertIs(type(revived), cls)
                self.assertEqual(_json(config), _json(revived.get_config()))
                break
        return revived

    def get_temp_dir(self):
        import shutil
        import tempfile
        path = tempfile.mkdtemp()
        self.addCleanup(lambda: shutil.rmtree(path, ignore_errors=True))
        return path


# --------------------------------------------------------------------------- ops / backend on NumPy


class Variable(MetricVariable):
    """Keras's ``backend.Variable`` as a NumPy array (updated in place by normlab's optimizers).

    ``initializer`` may be a value or a normlab initializer (called with ``shape``).
    """

    def __new__(cls, initializer=None, shape=None, dtype=None, trainable=True, name=None):
        if callable(initializer) and not isinstance(initializer, np.ndarray):
            initializer = initializer(shape, dtype or "float32")
        arr = np.array(initializer, dtype=dtype or (None if np.asarray(initializer).dtype.kind == "f" else "float32"))
        if arr.dtype == np.float64 and dtype is None and not isinstance(initializer, np.ndarray):
            arr = arr.astype(np.float32)
        obj = arr.view(cls)
        obj.trainable, obj.name = trainable, name or "variable"  # path, value, numpy, assign*: MetricVariable's
        return obj

    def __array_finalize__(self, obj):
        self.trainable = getattr(obj, "trainable", True)
        self.name = getattr(obj, "name", "variable")


def _standardize_dtype(dtype):
    if dtype is None:
        return "float32"
    if dtype in (float, "float"):
        return "float32"
    if dtype in (int, "int"):
        return "int32"
    if dtype in (bool, "bool"):
        return "bool"
    return getattr(np.dtype(dtype), "name", str(dtype))


def _convert(x, dtype=None):
    arr = np.asarray(x)
    if dtype is not None:
        return arr.astype(dtype)
    if arr.dtype == np.float64 and not isinstance(x, np.ndarray):
        return arr.astype(np.float32)  # Keras's floatx for Python floats
    return arr


def _uniform(shape, minval=0.0, maxval=1.0, dtype="float32", seed=None):
    return np.random.default_rng(seed).uniform(minval, maxval, size=shape).astype(dtype)


def _normal(shape, mean=0.0, stddev=1.0, dtype="float32", seed=None):
    return np.random.default_rng(seed).normal(mean, stddev, size=shape).astype(dtype)


backend = types.SimpleNamespace(
    backend=lambda: "numpy",
    random=types.SimpleNamespace(uniform=_uniform, normal=_normal, SeedGenerator=lambda seed=None, **kw: (
        np.random.default_rng(seed))),
    floatx=lambda: "float32",
    epsilon=lambda: 1e-7,
    standardize_dtype=_standardize_dtype,
    convert_to_numpy=np.asarray,
    convert_to_tensor=_convert,
    is_tensor=lambda x: isinstance(x, np.ndarray),
    Variable=lambda initializer=None, shape=None, dtype=None, trainable=True, name=None, value=None, **kw: (
        Variable(initializer if value is None else value, shape=shape, dtype=dtype, trainable=trainable, name=name)),
    shape=np.shape,
)

ops = types.SimpleNamespace(
    convert_to_tensor=_convert,
    array=np.array,
    ones=lambda shape, dtype="float32": np.ones(shape, dtype),
    zeros=lambda shape, dtype="float32": np.zeros(shape, dtype),
    shape=np.shape,
    cast=lambda x, dtype: np.asarray(x).astype(dtype),
    transpose=lambda x, axes=None: np.transpose(x, axes),
    tile=np.tile,
    one_hot=lambda x, num_classes, dtype="float32": np.eye(num_classes, dtype=dtype)[np.asarray(x)],
    expand_dims=np.expand_dims,
    log=np.log,
    sum=np.sum,
    mean=np.mean,
    reshape=np.reshape,
    abs=np.abs,
    sqrt=np.sqrt,
    exp=np.exp,
    stack=np.stack,
    concatenate=np.concatenate,
    arange=np.arange,
    full=lambda shape, fill_value, dtype=None: np.full(shape, fill_value, dtype=dtype or "float32"),
    zeros_like=np.zeros_like,
    ones_like=np.ones_like,
    square=np.square,
    add=np.add,
    multiply=np.multiply,
    max=np.max,
    min=np.min,
    greater=np.greater,
    less=np.less,
    equal=np.equal,
)


def register_keras_serializable(package="Custom", name=None):
    """Keras's decorator; normlab builds configs only from its own registries, so it registers nothing."""
    def deco(obj):
        return obj
    return deco


#: Keras's symbolic tensor: normlab has none (tests that need one are strict xfails)
KerasTensor = None


def skip_if_backend(*args, **kwargs):
    """Keras's conftest helper: normlab has one backend, so nothing is skipped."""
    def deco(fn):
        return fn
    return deco


class _SeedGenerator:
    """Keras's ``random.SeedGenerator(seed)``: a NumPy Generator, which normlab's initializers take as a seed
    that advances with each call."""

    def __new__(cls, seed=None, **kwargs):
        return np.random.default_rng(seed)


random = types.SimpleNamespace(
    SeedGenerator=_SeedGenerator,
    uniform=lambda shape, minval=0.0, maxval=1.0, dtype="float32", seed=None: _uniform(shape, minval, maxval, dtype,
                                                                                         seed),
    normal=lambda shape, mean=0.0, stddev=1.0, dtype="float32", seed=None: _normal(shape, mean, stddev, dtype, seed),
)

#: Keras's MultiHeadAttention: normlab has none (its tests are strict xfails)
MultiHeadAttention = None


#: Keras's global dtype policy: normlab has none (it computes in the inputs' dtype)
dtype_policies = types.SimpleNamespace(
    dtype_policy=types.SimpleNamespace(dtype_policy=lambda: None, set_dtype_policy=lambda policy: None))
backend.set_floatx = lambda value: None


# --------------------------------------------------------------------------- Keras's test utilities


def get_test_data(train_samples, test_samples, input_shape, num_classes, random_seed=None):
    """Keras's ``testing.test_utils.get_test_data`` (the same arrays for the same seed)."""
    np.random.seed(random_seed)

    # Total samples
    total_samples = train_samples + test_samples

    # Ensure that we generate a balanced dataset
    samples_per_class = total_samples // num_classes
    y = np.array(
        [i for i in range(num_classes) for _ in range(samples_per_class)],
        dtype=np.int32,
    )

    # Generate extra samples in a deterministic manner
    extra_samples = total_samples - len(y)
    y_extra = np.array(
        [i % num_classes for i in range(extra_samples)], dtype=np.int64
    )
    y = np.concatenate([y, y_extra])

    # Generate data
    templates = 2 * num_classes * np.random.random((num_classes,) + input_shape)
    x = np.zeros((total_samples,) + input_shape, dtype=np.float32)
    for i in range(total_samples):
        x[i] = templates[y[i]] + np.random.normal(
            loc=0, scale=1.0, size=input_shape
        )

    # Shuffle the entire dataset to ensure randomness based on seed
    indices = np.arange(total_samples)
    np.random.shuffle(indices)
    x, y = x[indices], y[indices]

    # Stratified Shuffle Split
    x_train, y_train, x_test, y_test = [], [], [], []
    for cls in range(num_classes):
        cls_indices = np.where(y == cls)[0]
        np.random.shuffle(cls_indices)
        train_count = int(train_samples / num_classes)

        x_train.extend(x[cls_indices[:train_count]])
        y_train.extend(y[cls_indices[:train_count]])

        x_test.extend(x[cls_indices[train_count:]])
        y_test.extend(y[cls_indices[train_count:]])

    # Convert to numpy arrays
    x_train, y_train = np.array(x_train), np.array(y_train)
    x_test, y_test = np.array(x_test), np.array(y_test)

    # Shuffle training and test sets after stratified split
    train_indices = np.arange(len(x_train))
    test_indices = np.arange(len(x_test))
    np.random.shuffle(train_indices)
    np.random.shuffle(test_indices)

    x_train, y_train = x_train[train_indices], y_train[train_indices]
    x_test, y_test = x_test[test_indices], y_test[test_indices]

    return (x_train, y_train), (x_test, y_test)




test_utils = types.SimpleNamespace(get_test_data=get_test_data)
io_utils = types.SimpleNamespace(disable_interactive_logging=lambda: None, enable_interactive_logging=lambda: None,
                                 set_logging_verbosity=lambda level: None, is_interactive_logging_enabled=lambda: True)


def _file_open(path, mode="r"):
    return open(path, mode)


file_utils = types.SimpleNamespace(join=lambda *a: __import__("os").path.join(*a),
                                   exists=lambda p: __import__("os").path.exists(p), File=_file_open)
