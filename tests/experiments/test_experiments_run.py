"""Each experiment at a tiny step count: files written, JSON keys, non-empty PNGs."""

import json

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("normlab.optimizers")


def _png_ok(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_bn_paper_tiny(tmp_path):
    pytest.importorskip("matplotlib")
    from normlab.experiments import bn_paper

    lines = []
    res = bn_paper.run(dataset="digits", steps=20, eval_every=10, out_dir=tmp_path, print_fn=lines.append)
    for name in ("bn_paper.json", "bn_paper.md", "bn_paper_accuracy.png", "bn_paper_percentiles.png",
                 "bn_paper_diagnostics.png"):
        assert (tmp_path / name).is_file(), name
    for name in ("bn_paper_accuracy.png", "bn_paper_percentiles.png", "bn_paper_diagnostics.png"):
        assert _png_ok(tmp_path / name)
    data = json.loads((tmp_path / "bn_paper.json").read_text())
    assert set(data) == {"config", "baseline", "bn", "summary"}
    for key in ("baseline", "bn"):
        r = data[key]
        assert r["steps"] == [0, 10, 20]
        assert len(r["accuracy"]) == 3 and all(0 <= a <= 1 for a in r["accuracy"])
        assert r["percentile_steps"] == [0, 10, 20]
        assert all(p[0] <= p[1] <= p[2] for p in r["unit_percentiles"])
        assert set(r["layers"]) == {"hidden1", "hidden2", "hidden3"}
        assert all(0 <= s <= 1 for v in r["layers"].values() for s in v["saturated"])
    assert data["config"]["steps"] == 20 and data["config"]["dataset"] == "digits"
    assert data["summary"]["evaluations"] == 2
    md = (tmp_path / "bn_paper.md").read_text()
    assert "bn_paper_accuracy.png" in md and "| step | without BN | with BN |" in md
    assert res["summary"] == data["summary"]


def test_bn_paper_without_plots_and_bad_arguments(tmp_path):
    from normlab.experiments import bn_paper

    bn_paper.run(dataset="digits", steps=6, eval_every=3, out_dir=tmp_path, plots=False, print_fn=lambda *a: None)
    assert (tmp_path / "bn_paper.json").is_file() and not (tmp_path / "bn_paper_accuracy.png").exists()
    with pytest.raises(ValueError, match="steps"):
        bn_paper.run(dataset="digits", steps=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        bn_paper.run(dataset="cifar", steps=5, out_dir=tmp_path)


def test_regularization_tiny(tmp_path):
    pytest.importorskip("matplotlib")
    from normlab.experiments import regularization

    res = regularization.run(steps=15, alphas=(0.1, 10.0), out_dir=tmp_path, print_fn=lambda *a: None)
    assert _png_ok(tmp_path / "regularization.png")
    data = json.loads((tmp_path / "regularization.json").read_text())
    assert set(data["datasets"]) == {"moons", "circles", "linearly separable"}
    for v in data["datasets"].values():
        assert len(v["test_accuracy"]) == 2 and all(0 <= a <= 1 for a in v["test_accuracy"])
        assert len(v["sklearn_test_accuracy"]) == 2
    assert data["config"]["l2"] == pytest.approx([0.1 / 120, 10.0 / 120])
    assert res["datasets"] == data["datasets"]


def test_sklearn_alpha_conversion_matches_the_objective():
    """sklearn's 0.5 * alpha * ||W||^2 / n equals normlab's L2(l2) penalty l2 * ||W||^2."""
    import numpy as np

    from normlab import regularizers
    from normlab.experiments.regularization import sklearn_alpha_to_l2

    w = np.random.default_rng(0).normal(size=(10, 10))
    alpha, n = 3.0, 60
    sklearn_penalty = 0.5 * alpha * np.sum(w**2) / n
    assert regularizers.L2(sklearn_alpha_to_l2(alpha, n)).penalty(w) == pytest.approx(sklearn_penalty)


def test_mnist1d_tiny(tmp_path):
    pytest.importorskip("matplotlib")
    from normlab.experiments import mnist1d

    res = mnist1d.run(steps=6, eval_every=3, n_seeds=2, models=("mlp", "cnn"), variants=("plain", "bn+dropout"),
                      out_dir=tmp_path, print_fn=lambda *a: None)
    for name in ("mnist1d.json", "mnist1d.md"):
        assert (tmp_path / name).is_file()
    assert _png_ok(tmp_path / "mnist1d.png")
    data = json.loads((tmp_path / "mnist1d.json").read_text())
    assert set(data["results"]) == {"mlp", "cnn"}
    for kind in ("mlp", "cnn"):
        assert set(data["results"][kind]) == {"plain", "bn+dropout"}
        for r in data["results"][kind].values():
            assert 0 <= r["test_accuracy"] <= 1 and len(r["test_accuracies"]) == 2
            assert r["test_accuracy"] == pytest.approx(sum(r["test_accuracies"]) / 2)
    assert data["config"]["seeds"] == [0, 1]
    assert data["published"] == {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94}
    md = (tmp_path / "mnist1d.md").read_text()
    assert "| Logistic regression | not run |" in md and "| 68 % |" in md and "| 94 % |" in md and " ± " in md
    assert res["results"]["mlp"]["plain"]["curve"][0][0] == 0
    with pytest.raises(ValueError, match="unknown model"):
        mnist1d.run(steps=2, models=("rnn",), out_dir=tmp_path)


def test_mnist1d_models():
    from normlab.experiments.mnist1d import build_model
    from normlab.layers import BatchNormalization, Dropout

    m = build_model("mlp", "bn+dropout")
    kinds = [type(l).__name__ for l in m.layers]
    assert kinds.count("BatchNormalization") == 2 and kinds.count("Dropout") == 2
    cnn = build_model("cnn", "bn")
    assert [type(l).__name__ for l in cnn.layers].count("Conv1D") == 3
    cnn.build((None, 40))
    assert cnn.output_shape_for((None, 40)) == (None, 10)
    assert not any(isinstance(l, (BatchNormalization, Dropout)) for l in build_model("logistic", "plain").layers)
    with pytest.raises(ValueError, match="unknown variant"):
        build_model("mlp", "layernorm")


def test_bn_paper_falls_back_to_digits_without_fashion_mnist(tmp_path, monkeypatch):
    from normlab import datasets
    from normlab.experiments import bn_paper

    def missing(*args, **kwargs):
        raise FileNotFoundError("no Fashion-MNIST here")

    monkeypatch.setattr(datasets, "load_fashion_mnist", missing)
    lines = []
    res = bn_paper.run(steps=4, eval_every=2, out_dir=tmp_path, plots=False, print_fn=lines.append)
    assert res["config"]["dataset"] == "digits"
    assert "Fashion-MNIST was not found" in lines[0] and "--dataset digits" in lines[0]
