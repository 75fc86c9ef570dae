"""normlab.utils: to_categorical, normalize, set_random_seed, PyDataset.

Tests ported from Keras name their Keras test in a comment; the others are
normlab's own (errors, edge cases, the global seed's stream).
"""

from __future__ import annotations

import doctest
import itertools
import math
import random
import threading
import time
import warnings

import numpy as np
import pytest

import normlab
import normlab.utils
from normlab import InvalidParameterError
from normlab.utils import PyDataset, Sequence, get_random_seed, normalize, set_random_seed, to_categorical
from normlab.utils import _random, numerical, py_dataset
from normlab.utils.py_dataset import iterate_batches

NUM_CLASSES = 5


@pytest.mark.parametrize("module", [numerical, py_dataset, _random])
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ---------------------------------------------------------------- to_categorical

# keras/src/utils/numerical_utils_test.py, TestNumericalUtils.test_to_categorical
@pytest.mark.parametrize("shape, expected_shape", [
    ((1,), (1, NUM_CLASSES)),
    ((3,), (3, NUM_CLASSES)),
    ((4, 3), (4, 3, NUM_CLASSES)),
    ((5, 4, 3), (5, 4, 3, NUM_CLASSES)),
    ((3, 1), (3, NUM_CLASSES)),
    ((3, 2, 1), (3, 2, NUM_CLASSES)),
])
def test_to_categorical(shape, expected_shape, rng):
    label = rng.integers(0, NUM_CLASSES, shape)
    one_hot = to_categorical(label, NUM_CLASSES)
    assert one_hot.shape == expected_shape
    assert np.all(one_hot.sum(axis=-1) == 1)  # one 1 per row
    assert np.all(np.argmax(one_hot, -1).reshape(label.shape) == label)
    assert one_hot.dtype == np.float32


# keras/src/utils/numerical_utils_test.py, TestNumericalUtils.test_to_categorical_without_num_classes
def test_to_categorical_without_num_classes():
    assert to_categorical([0, 2, 5]).shape == (3, 5 + 1)


# keras/src/utils/numerical_utils_test.py, TestNumericalUtils.test_to_categorical_with_backend_tensor
# (normlab has no backend tensors: the same labels as a NumPy array and as a list)
@pytest.mark.parametrize("as_array", [np.array, list])
def test_to_categorical_values(as_array):
    expected = np.array([[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(to_categorical(as_array([0, 2, 1, 3, 4]), NUM_CLASSES), expected)


def test_to_categorical_accepts_whole_floats_unsigned_and_scalars():
    np.testing.assert_array_equal(to_categorical(np.array([2.0, 0.0]), 3), [[0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(to_categorical(np.array([1], np.uint8), 2), [[0, 1]])
    np.testing.assert_array_equal(to_categorical(3, 4), [0, 0, 0, 1])
    assert to_categorical(np.zeros((0,), np.int64), 3).shape == (0, 3)
    assert to_categorical(np.zeros((2, 0, 1), np.int64), 3).shape == (2, 0, 3)


@pytest.mark.parametrize("labels, num_classes, match", [
    ([0, -1, 2], None, r"must be >= 0; got -1 \(at flat index 1\)"),
    ([0, 1, 5], 5, r"below num_classes=5; got 5 \(at flat index 2\)"),
    ([[0.0, 1.5]], 3, r"integer class labels; got 1.5 \(at index \(0, 1\)\)"),
    ([0.0, np.nan], 3, "integer class labels; got nan"),
    ([], None, "'num_classes' cannot be inferred"),
])
def test_to_categorical_refuses_bad_labels(labels, num_classes, match):
    with pytest.raises(ValueError, match=match):
        to_categorical(np.array(labels), num_classes)


def test_to_categorical_refuses_bad_arguments():
    with pytest.raises(TypeError, match="integer class labels; got an array of dtype <U1"):
        to_categorical(["a", "b"])
    for bad in (0, -2, 2.5, True):
        with pytest.raises(InvalidParameterError, match="The 'num_classes' parameter of to_categorical"):
            to_categorical([0, 1], bad)


# --------------------------------------------------------------------- normalize

# keras/src/utils/numerical_utils_test.py, TestNumericalUtils.test_normalize (its expected
# values, computed here in float64 from the formula, for orders 1, 2 and 3)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_normalize(order, rng):
    x = rng.uniform(size=(3, 3)).astype(np.float32)
    norm = np.sum(np.abs(x.astype(np.float64)) ** order, axis=-1, keepdims=True) ** (1 / order)
    out = normalize(x, axis=-1, order=order)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, x / norm, rtol=1e-6)
    # each row now has unit norm
    np.testing.assert_allclose(np.linalg.norm(out.astype(np.float64), ord=order, axis=-1), 1.0, rtol=1e-6)


# keras/src/utils/numerical_utils_test.py, TestNumericalUtils.test_normalize_numpy_axis_zero
def test_normalize_numpy_axis_zero():
    x = np.array([[3.0, 0.0, 12.0], [4.0, 5.0, 0.0]])
    out = normalize(x, axis=0)
    assert isinstance(out, np.ndarray) and out.shape == x.shape
    np.testing.assert_allclose(out, [[0.6, 0.0, 1.0], [0.8, 1.0, 0.0]])


def test_normalize_zero_vectors_integers_inf_and_copies():
    x = np.array([[0.0, 0.0], [3.0, -4.0]], dtype=np.float64)
    out = normalize(x)
    np.testing.assert_array_equal(out, [[0.0, 0.0], [0.6, -0.8]])  # a zero vector stays zero (no NaN)
    assert out is not x and x[1, 0] == 3.0
    np.testing.assert_allclose(normalize(np.array([1, 2, 2])), np.array([1, 2, 2]) / 3.0)  # int -> float64
    np.testing.assert_allclose(normalize(np.array([[1.0, -4.0]]), order=np.inf), [[0.25, -1.0]])
    np.testing.assert_allclose(normalize(np.ones((2, 3, 4)), axis=1), np.full((2, 3, 4), 1 / math.sqrt(3)))


def test_normalize_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"normalize: axis 2 is out of range .* \(shape \(2, 2\)\)"):
        normalize(np.ones((2, 2)), axis=2)
    with pytest.raises(InvalidParameterError, match="The 'axis' parameter of normalize"):
        normalize(np.ones(2), axis=None)
    for bad in ("fro", None, True, float("nan")):
        with pytest.raises(InvalidParameterError, match="The 'order' parameter of normalize"):
            normalize(np.ones(2), order=bad)


# --------------------------------------------------------------- set_random_seed

# keras/src/utils/rng_utils_test.py, TestRandomSeedSetting.test_set_random_seed_with_global_seed_generator
# (Keras's backend.random.randint without a seed draws from its global SeedGenerator; normlab's
# consumers without a seed take their generator from normlab.utils._random.default_rng())
def test_set_random_seed_with_global_seed_generator():
    def draw():
        return _random.default_rng().integers(0, 1000, size=(32, 10))

    set_random_seed(42)
    y1 = draw()
    y2 = draw()
    assert not np.array_equal(y1, y2)  # a second consumer gets other numbers
    set_random_seed(42)
    np.testing.assert_array_equal(draw(), y1)  # re-seeding starts over
    set_random_seed(1337)
    assert not np.array_equal(draw(), y1)


def test_set_random_seed_seeds_python_and_numpy_and_is_remembered():
    set_random_seed(7)
    a = (random.random(), np.random.random())
    assert get_random_seed() == 7
    set_random_seed(np.int64(7))  # NumPy integers are ints too
    assert (random.random(), np.random.random()) == a
    assert type(get_random_seed()) is int


@pytest.mark.parametrize("bad", [-1, 2**32, 1.0, "0", None, True])
def test_set_random_seed_refuses_what_numpy_refuses(bad):
    with pytest.raises(InvalidParameterError, match="The 'seed' parameter of set_random_seed must be an int in the "
                                                    r"range \[0, 4.29497e\+09\]"):
        set_random_seed(bad)


def test_streams_without_a_global_seed_are_fresh():
    monkey_free = _random._root is None
    if not monkey_free:  # pragma: no cover - the fixture restores an earlier test's seed
        pytest.skip("a global seed is set in this process")
    assert get_random_seed() is None
    assert _random.fresh_entropy() != _random.fresh_entropy()
    assert _random.default_rng().integers(2**62) != _random.default_rng().integers(2**62)


def test_fresh_entropy_follows_the_global_seed():
    set_random_seed(3)
    a = [_random.fresh_entropy() for _ in range(3)]
    set_random_seed(3)
    b = [_random.fresh_entropy() for _ in range(3)]
    assert a == b and len(set(a)) == 3 and all(0 <= e < 2**128 for e in a)
    # what fit makes of it: a SeedSequence that reproduces
    ss = np.random.SeedSequence(a[0])
    assert ss.entropy == a[0]


def test_default_rng_carries_its_seed_sequence():
    # noise layers spawn child streams from the generator they are given (no draw consumed)
    set_random_seed(5)
    g = _random.default_rng()
    assert isinstance(g.bit_generator.seed_seq, np.random.SeedSequence)
    assert g.bit_generator.seed_seq.entropy == 5


def test_default_rng_is_thread_safe():
    set_random_seed(11)
    seen, lock = [], threading.Lock()

    def take():
        for _ in range(50):
            s = _random.default_rng().bit_generator.seed_seq.spawn_key
            with lock:
                seen.append(s)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == [(i,) for i in range(200)]  # every child once


def _dense_dropout_model():
    return normlab.Sequential([
        normlab.layers.Dense(10),
        normlab.layers.Dropout(0.5),
        normlab.layers.Dense(10),
    ])


# keras/src/utils/rng_utils_test.py, TestRandomSeedSetting.test_set_random_seed_with_seed_generator
def test_set_random_seed_with_seed_generator():
    def get_model_output():
        x = np.random.random((32, 10)).astype("float32")
        return _dense_dropout_model().predict(x, batch_size=16)

    set_random_seed(42)
    y1 = get_model_output()
    y2 = get_model_output()
    assert not np.allclose(y1, y2)  # a second model gets other initial weights
    set_random_seed(42)
    np.testing.assert_array_equal(get_model_output(), y1)
    set_random_seed(1337)
    assert not np.allclose(get_model_output(), y1)


def test_build_and_fit_twice_after_set_random_seed_gives_identical_weights():
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)

    def run(with_input: bool):
        set_random_seed(0)
        layers = [normlab.layers.Dense(16, activation="relu"), normlab.layers.Dropout(0.3),
                  normlab.layers.GaussianNoise(0.1), normlab.layers.Dense(3, activation="softmax")]
        model = normlab.Sequential(([normlab.Input((8,))] if with_input else []) + layers)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)  # seed=None: shuffling from the global seed
        return model.get_weights()

    for with_input in (False, True):
        first, second = run(with_input), run(with_input)
        assert len(first) == len(second) > 0
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------- PyDataset

class ExamplePyDataset(PyDataset):
    """As Keras's test dataset: batches of x and y, optionally endless or slow."""

    def __init__(self, x, y, batch_size=32, delay=0.0, infinite=False, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size, self.delay, self.infinite = x, y, batch_size, delay, infinite

    @property
    def num_batches(self):
        return None if self.infinite else math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, idx):
        time.sleep(self.delay)
        if self.infinite:
            idx = idx % math.ceil(len(self.x) / self.batch_size)
        low = idx * self.batch_size
        high = min(low + self.batch_size, len(self.x))
        return self.x[low:high], self.y[low:high]


class LenPyDataset(PyDataset):
    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n, self.epochs_ended = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((2, 3), i, dtype=np.float32), np.full(2, i)

    def on_epoch_end(self):
        self.epochs_ended += 1


# keras/src/trainers/data_adapters/py_dataset_adapter_test.py, PyDatasetAdapterTest.test_iterate_finite
def test_iterate_finite():
    ds = ExamplePyDataset(np.ones((6, 11), dtype="int32"), np.zeros((6, 11), dtype="int32"), batch_size=2)
    assert len([batch for batch in ds]) == 3


# keras/src/trainers/data_adapters/py_dataset_adapter_test.py,
# PyDatasetAdapterTest.test_iterate_infinite_with_none_num_batches
def test_iterate_infinite_with_none_num_batches():
    ds = ExamplePyDataset(np.ones((6, 11), dtype="int32"), np.zeros((6, 11), dtype="int32"), batch_size=2,
                          infinite=True)
    batches = list(itertools.islice(ds, 11))
    assert len(batches) == 11
    np.testing.assert_array_equal(batches[10][0], batches[1][0])


# keras/src/trainers/data_adapters/py_dataset_adapter_test.py, PyDatasetAdapterTest.test_iterate_infinite_with_no_len
def test_iterate_infinite_with_no_len():
    class NoLenDataset(PyDataset):
        def __getitem__(self, idx):
            return np.ones((2, 11), dtype="int32")

    batches = list(itertools.islice(NoLenDataset(), 11))
    assert len(batches) == 11
    with pytest.raises(NotImplementedError, match="NoLenDataset must implement __len__"):
        NoLenDataset().num_batches


# keras/src/trainers/data_adapters/py_dataset_adapter_test.py, PyDatasetAdapterTest.test_basic_flow
# (the NumPy variants: one reader, two threads, "multiprocessing" served by threads; finite and
# endless; the order is kept; shuffling is fit's part, so a permuted order stands for it here)
@pytest.mark.parametrize("workers, use_multiprocessing", [(0, False), (2, False), (2, True)],
                         ids=["single", "multithreading", "multiprocessing"])
@pytest.mark.parametrize("infinite", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_basic_flow(workers, use_multiprocessing, infinite, shuffle):
    set_random_seed(1337)
    x = np.random.random((64, 4)).astype("float32")
    y = np.array([[i, i] for i in range(64)], dtype="float32")
    ds = ExamplePyDataset(x, y, batch_size=16, workers=workers, use_multiprocessing=use_multiprocessing,
                          max_queue_size=0, infinite=infinite)
    order = None
    if shuffle and not infinite:  # as in Keras, an endless dataset is read in order
        order = np.random.default_rng(0).permutation(4).tolist()
        assert order != [0, 1, 2, 3]
    sample_order = []
    ds.on_epoch_begin()
    for bx, by in iterate_batches(ds, order):
        assert isinstance(bx, np.ndarray) and bx.dtype == by.dtype == np.float32
        assert bx.shape == (16, 4) and by.shape == (16, 2)
        sample_order.extend(by[:, 0].tolist())
        if infinite and len(sample_order) >= 128:
            break
    ds.on_epoch_end()
    expected = list(range(64))
    if infinite:
        assert sample_order == expected + expected
    elif shuffle:
        assert sample_order != expected and sorted(sample_order) == expected
        assert sample_order == [16 * b + i for b in order for i in range(16)]
    else:
        assert sample_order == expected


# keras/src/trainers/data_adapters/py_dataset_adapter_test.py, PyDatasetAdapterTest.test_speedup
# (delay 0.05 s a batch instead of 0.2 s, to keep the suite fast)
def test_speedup():
    x, y = np.random.random((40, 4)), np.random.random((40, 2))

    def elapsed(**kwargs):
        t0 = time.perf_counter()
        for _ in iterate_batches(ExamplePyDataset(x, y, batch_size=4, delay=0.05, **kwargs)):
            pass
        return time.perf_counter() - t0

    assert elapsed(workers=4, max_queue_size=8) < elapsed()


# keras/src/trainers/data_adapters/py_dataset_adapter_test.py, PyDatasetAdapterTest.test_with_different_shapes
def test_with_different_shapes():
    class ShapesPyDataset(PyDataset):
        @property
        def num_batches(self):
            return 3

        def __getitem__(self, idx):
            width = (4, 5, 6)[idx]
            n = 16 if idx < 2 else 2
            return np.ones([n, width], "float32"), np.ones([n, 2], "float32")

    shapes = [(bx.shape, by.shape) for bx, by in iterate_batches(ShapesPyDataset())]
    assert shapes == [((16, 4), (16, 2)), ((16, 5), (16, 2)), ((2, 6), (2, 2))]


class ExceptionPyDataset(PyDataset):
    @property
    def num_batches(self):
        return 4

    def __getitem__(self, index):
        if index < 2:
            return np.random.random((8, 4)).astype("float32"), np.random.random((8, 2)).astype("float32")
        raise ValueError("Expected exception")


# keras/src/trainers/data_adapters/py_dataset_adapter_test.py, PyDatasetAdapterTest.test_exception_reported
@pytest.mark.parametrize("workers, use_multiprocessing", [(0, False), (2, False), (2, True)],
                         ids=["single", "multithreading", "multiprocessing"])
def test_exception_reported(workers, use_multiprocessing):
    ds = ExceptionPyDataset(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=0)
    it = iterate_batches(ds)
    next(it)
    next(it)
    with pytest.raises(ValueError, match="Expected exception"):
        next(it)


def test_len_protocol_and_epoch_hooks():
    ds = LenPyDataset(3)
    assert ds.num_batches == 3 and len(ds) == 3
    assert [int(bx[0, 0]) for bx, _ in ds] == [0, 1, 2]
    assert [int(bx[0, 0]) for bx, _ in iterate_batches(ds, [2, 0])] == [2, 0]
    ds.on_epoch_end()
    assert ds.epochs_ended == 1
    assert PyDataset().on_epoch_begin() is None and PyDataset().on_epoch_end() is None
    with pytest.raises(NotImplementedError, match="must implement __getitem__"):
        PyDataset()[0]
    assert Sequence is PyDataset and normlab.utils.PyDataset is PyDataset


def test_threads_read_ahead_at_most_the_queue_and_stop_with_the_consumer():
    started, lock = [], threading.Lock()

    class Counting(PyDataset):
        def __len__(self):
            return 100

        def __getitem__(self, i):
            with lock:
                started.append(i)
            time.sleep(0.002)
            return i

    it = iterate_batches(Counting(workers=3, max_queue_size=5))
    assert [next(it) for _ in range(4)] == [0, 1, 2, 3]
    time.sleep(0.05)
    assert max(started) <= 3 + 5  # never more than max_queue_size batches ahead
    it.close()  # a break or an early stop: pending batches are cancelled, threads joined
    n = len(started)
    time.sleep(0.02)
    assert len(started) == n <= 9
    assert not [t for t in threading.enumerate() if t.name.startswith("normlab-PyDataset")]


def test_constructor_arguments_and_missing_super_init():
    ds = PyDataset(workers=4, use_multiprocessing=True, max_queue_size=3)
    assert (ds.workers, ds.use_multiprocessing, ds.max_queue_size) == (4, True, 3)
    ds.workers = 2
    assert ds.workers == 2
    with pytest.raises(InvalidParameterError, match="The 'workers' parameter of PyDataset"):
        PyDataset(workers=-1)
    with pytest.raises(InvalidParameterError, match="The 'max_queue_size' parameter of LenPyDataset"):
        LenPyDataset(2, max_queue_size=1.5)
    with pytest.raises(InvalidParameterError, match="The 'use_multiprocessing' parameter"):
        ds.use_multiprocessing = "yes"

    class NoSuper(PyDataset):
        def __init__(self):  # forgets super().__init__(), as Keras users sometimes do
            self.n = 2

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return i

    with pytest.warns(UserWarning, match=r"NoSuper should call super\(\).__init__\(\*\*kwargs\)"):
        assert NoSuper().workers == 1
    ns = NoSuper()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (ns.workers, ns.use_multiprocessing, ns.max_queue_size) == (1, False, 10)
    with pytest.warns(UserWarning, match="should call super"):
        assert list(iterate_batches(NoSuper())) == [0, 1]


def test_iterate_batches_checks_num_batches():
    class Bad(PyDataset):
        @property
        def num_batches(self):
            return 2.5

    with pytest.raises(ValueError, match=r"Sequential.fit: Bad's number of batches must be an int >= 0 or None; "
                                         "got 2.5"):
        next(iterate_batches(Bad(), owner="Sequential.fit"))


def test_unpack_batch_follows_keras():
    x, y, w = np.ones((2, 3)), np.arange(2), np.ones(2)
    assert py_dataset.unpack_batch(x).x is x and py_dataset.unpack_batch(x).y is None
    assert py_dataset.unpack_batch((x,)) == (x, None, None)
    b = py_dataset.unpack_batch([x, y])
    assert b.x is x and b.y is y and b.sample_weight is None
    assert py_dataset.unpack_batch((x, y, w)).sample_weight is w
    for bad, what in (({"x": x}, "a dict"), ((x, y, w, w), "a tuple of 4 items"), ((), "a tuple of 0 items"),
                      ("x", "a str")):
        with pytest.raises(ValueError, match=rf"Sequential.fit: a PyDataset's __getitem__ must return .* got {what}"):
            py_dataset.unpack_batch(bad, owner="Sequential.fit")
