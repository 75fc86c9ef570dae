import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_overfitting_example_runs():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("overfitting", EXAMPLES / "overfitting.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lines = []
    res = mod.run(epochs=2, n_train=128, print_fn=lines.append)
    assert set(res) == {"none", "dropout", "l2", "early_stopping"}
    for r in res.values():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["epochs"] <= 2
    assert "regularization" in lines[1]
