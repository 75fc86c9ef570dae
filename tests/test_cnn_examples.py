"""Smoke tests of the CNN examples and the Fashion-MNIST epoch benchmark at tiny sizes.

Structure only (keys, shapes, files, a saved model that loads back): the
accuracy figures come from the full runs in docs/cnn.md.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import normlab

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# the examples' train / run limit BLAS threads with threadpoolctl (installed with scikit-learn)
needs_threadpoolctl = pytest.mark.skipif(importlib.util.find_spec("threadpoolctl") is None,
                                         reason="the example needs threadpoolctl (pip install threadpoolctl)")


def _load(name: str):
    key = f"_cnn_example_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod


def _fashion_like(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)


@needs_threadpoolctl
def test_fashion_cnn_train_tiny(tmp_path):
    ex = _load("fashion_mnist_cnn")
    lines = []
    out = tmp_path / "model.npz"
    data = (_fashion_like(64), _fashion_like(32, seed=1))
    res = ex.train(epochs=2, batch_size=32, threads=1, eval_every=1, data=data, out=str(out), print_fn=lines.append)
    assert [r["epoch"] for r in res["epochs"]] == [1, 2]
    for r in res["epochs"]:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and math.isfinite(r["loss"]) and r["train_s"] > 0
    assert res["test_accuracy"] == res["epochs"][-1]["test_accuracy"]
    assert res["config"]["n_train"] == 64 and res["config"]["n_test"] == 32
    assert res["params"] > 0 and res["wall_s"] >= res["train_s"]
    assert len(lines) == 4 and "final test accuracy" in lines[-1]
    # the saved model loads back and predicts the same
    x = data[1][0][:8]
    loaded = normlab.load_model(str(out))
    assert loaded.predict(x).shape == (8, 10)


@needs_threadpoolctl
def test_fashion_cnn_reproducible_and_augmented():
    ex = _load("fashion_mnist_cnn")
    data = (_fashion_like(32), _fashion_like(16, seed=1))
    kw = dict(epochs=1, batch_size=16, threads=1, data=data, print_fn=lambda *_: None)
    a = ex.train(seed=3, **kw)
    b = ex.train(seed=3, **kw)
    assert a["epochs"][0]["loss"] == b["epochs"][0]["loss"]
    aug = ex.train(seed=3, augment="flip+translate", blocks=((4,), (8,)), **kw)
    assert aug["config"]["augment"] == "flip+translate" and aug["config"]["blocks"] == [[4], [8]]
    with pytest.raises(ValueError, match="augment"):
        ex.build_model(augment="mixup")


@needs_threadpoolctl
def test_fashion_cnn_evaluates_last_epoch_by_default_and_smooths_labels():
    ex = _load("fashion_mnist_cnn")
    assert ex.DEFAULTS["eval_every"] == 0 and ex.DEFAULTS["label_smoothing"] == 0.1
    data = (_fashion_like(32), _fashion_like(16, seed=1))
    res = ex.train(epochs=3, batch_size=16, threads=1, blocks=((4,), (8,)), data=data, print_fn=lambda *_: None)
    accs = [r["test_accuracy"] for r in res["epochs"]]
    assert math.isnan(accs[0]) and math.isnan(accs[1]) and 0.0 <= accs[2] <= 1.0
    assert res["test_accuracy"] == accs[2] and res["config"]["label_smoothing"] == 0.1
    every2 = ex.train(epochs=3, batch_size=16, threads=1, eval_every=2, label_smoothing=0.0, blocks=((4,), (8,)),
                      data=data, print_fn=lambda *_: None)
    assert [math.isnan(r["test_accuracy"]) for r in every2["epochs"]] == [True, False, False]
    # smoothing changes the loss being minimised, so the first-epoch training loss differs
    assert every2["epochs"][0]["loss"] != res["epochs"][0]["loss"]


def test_fashion_cnn_parser():
    ex = _load("fashion_mnist_cnn")
    args = ex.build_parser().parse_args(["--epochs", "3", "--batch-size", "64", "--threads", "2", "--seed", "5",
                                         "--quick", "--out", "m.npz", "--blocks", "16/32,32"])
    assert (args.epochs, args.batch_size, args.threads, args.seed, args.quick, args.out) == (3, 64, 2, 5, True, "m.npz")
    assert args.blocks == ((16,), (32, 32))


def test_fashion_cnn_load_data():
    ex = _load("fashion_mnist_cnn")
    try:
        (x, y), (xt, yt) = ex.load_data(n_train=10, n_test=5)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")
    assert x.shape == (10, 28, 28, 1) and xt.shape == (5, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (10,) and yt.shape == (5,)


@needs_threadpoolctl
@pytest.mark.parametrize("bn", [False, True])
def test_mnist1d_cnn_tiny(bn):
    ex = _load("mnist1d_cnn")
    lines = []
    res = ex.run(steps=12, eval_every=5, n_seeds=2, bn=bn, n_train=200, n_test=100, print_fn=lines.append)
    assert res["model"] == ("CNN + BN" if bn else "CNN")
    assert len(res["runs"]) == 2 and len(res["test_accuracies"]) == 2
    for r in res["runs"]:
        assert r["steps"] == 12 and [s for s, _ in r["curve"]] == [5, 10, 12]
        assert 0.0 <= r["test_accuracy"] <= 1.0
    assert res["published"] == 0.94 and len(lines) == 4
    model = ex.build_model(bn=bn)
    assert model.predict(np.zeros((3, 40), np.float32)).shape == (3, 10)
    # the reference's 125 features reach the linear layer
    assert model.layers[-1].params["kernel"].shape == (125, 10)


def _bench():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import bench_fashion_epoch as B

    return B


def test_bench_fashion_epoch_quick():
    B = _bench()
    x, y = _fashion_like(8)
    # normlab alone: torch.optim imports torch._dynamo, seconds on a busy machine (the twin is checked below)
    res = B.bench_fashion_epoch(threads=1, batch=4, n_images=8, cfg=B.QUICK_CFG, use_torch=False, data=(x, y))
    rows = res["rows"]
    assert set(rows) == {"normlab"} and rows["normlab"]["step_s"] > 0
    assert rows["normlab"]["epoch_s"] == pytest.approx(rows["normlab"]["step_s"] * 15000)
    assert res["info"]["steps_per_epoch"] == 15000 and res["info"]["data"] == "given arrays"
    assert rows["normlab"]["cpu_step_s"] > 0
    assert "normlab" in B.format_text(res)


def test_bench_fashion_torch_twin_same_function():
    B = _bench()
    if B.torch is None:
        pytest.skip("torch is not installed")
    model = B.load_example().build_model(seed=0, augment="none")
    net = B.build_torch_net(model)
    x, _ = _fashion_like(16)
    # inference mode, fresh BN statistics: the same softmax outputs (kernel and flattening layouts converted)
    assert B._max_prob_diff(model, net, x) < 1e-4
    assert sum(p.numel() for p in net.parameters()) + 2 * sum(
        l.params["gamma"].size for l in model.layers if type(l).__name__ == "BatchNormalization"
    ) == model.count_params()
