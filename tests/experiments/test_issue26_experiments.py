"""normlab experiment normprop / optimizers / moving-stats at tiny sizes (issue 26)."""

import json
import math

import numpy as np
import pytest

from normlab.cli.main import main

pytest.importorskip("sklearn")


def _png_ok(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_normprop_tiny(tmp_path):
    pytest.importorskip("matplotlib")
    from normlab.experiments import normprop

    res = normprop.run(steps=6, eval_every=3, models=("batchnorm", "normprop"), hidden=(8,), out_dir=tmp_path,
                       print_fn=lambda *a: None)
    data = json.loads((tmp_path / "normprop.json").read_text())
    assert _png_ok(tmp_path / "normprop.png")
    assert data["steps"] == [0, 3, 6]
    assert set(data["accuracy"]) == {"batchnorm", "normprop"}
    assert all(len(v) == 3 and all(0 <= a <= 1 for a in v) for v in data["accuracy"].values())
    assert data["summary"]["batchnorm"]["cost_vs_batchnorm"] == 1.0
    assert res["summary"] == data["summary"]
    with pytest.raises(ValueError, match="unknown model"):
        normprop.run(steps=2, models=("bn",), out_dir=tmp_path)


def test_normprop_networks_see_standardized_data_and_the_same_batches():
    from normlab.experiments import normprop

    x, _, _, _ = normprop._standardized_digits()
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)
    model = normprop.build_model("normprop")
    assert [type(l).__name__ for l in model.layers] == ["NormPropDense", "NormPropDense", "Dense"]


def test_optimizers_tiny_and_surfaces(tmp_path):
    pytest.importorskip("matplotlib")
    from normlab.experiments import optimizers as E

    res = E.run(steps=8, learning_rates=(0.01, 0.1), optimizers=("SGD", "Adam"), out_dir=tmp_path,
                print_fn=lambda *a: None)
    for name in ("optimizers_paths.png", "optimizers_loss.png", "optimizers_schedules.png"):
        assert _png_ok(tmp_path / name), name
    data = json.loads((tmp_path / "optimizers.json").read_text())
    assert set(data["results"]) == set(E.SURFACES)
    assert set(data["results"]["quadratic"]) == {"SGD", "Adam"}
    for name in E.OPTIMIZERS:  # every optimizer builds and steps
        E.trajectory(E.SURFACES["saddle"], E.make_optimizer(name, 0.01), 2)
    assert all(r["learning_rate"] in (0.01, 0.1) for s in data["results"].values() for r in s.values())
    assert res["results"]["rosenbrock"]["Adam"]["path"].shape == (9, 2)
    # the gradients are the surfaces' exact gradients (central differences)
    for s in E.SURFACES.values():
        t = np.array([0.3, -0.7])
        num = [(s.f(t + h) - s.f(t - h)) / 2e-6 for h in np.eye(2) * 1e-6]
        np.testing.assert_allclose(s.grad(t), num, rtol=1e-6)


def test_optimizers_trajectory_is_apply_gradients_on_a_plain_array():
    from normlab import optimizers
    from normlab.experiments import optimizers as E

    s = E.SURFACES["quadratic"]
    path, loss = E.trajectory(s, optimizers.SGD(0.01), 3)
    theta = np.array(s.start)
    for k in range(1, 4):
        theta = theta - 0.01 * s.grad(theta)
        np.testing.assert_allclose(path[k], theta, rtol=1e-15)
    assert E.steps_to(np.array([1.0, 1e-4, 1.0, 1e-4, 1e-5])) == 3  # touching is not converging
    sched = E.schedules(100, lr0=0.1)
    assert sched["linear until τ (notes)"][0] == pytest.approx(0.1)
    assert sched["linear until τ (notes)"][80:] == pytest.approx([0.001] * 20)


def test_moving_stats_tiny(tmp_path):
    pytest.importorskip("matplotlib")
    from normlab.experiments import moving_stats as E

    res = E.run((2, 4), momenta=(0.5, 0.99), out_dir=tmp_path, print_fn=lambda *a: None)
    assert _png_ok(tmp_path / "moving_stats.png")
    data = json.loads((tmp_path / "moving_stats.json").read_text())
    assert data["checkpoints"] == [2, 4] and set(data["moving"]) == {"0.5", "0.99"}
    assert data["same_training"] is True  # the momentum does not enter the training steps
    assert res["suggested_momentum"][1] == pytest.approx(0.01 ** 0.25)
    assert E.momentum_for_steps(72) ** 72 == pytest.approx(0.01)
    assert 0.99**72 == pytest.approx(0.485, abs=1e-3) and math.isclose(E.momentum_for_steps(460), 0.99, abs_tol=1e-4)


@pytest.mark.parametrize("argv,files", [
    (["normprop", "--steps", "4", "--eval-every", "2", "--models", "batchnorm", "normprop"], ["normprop.json"]),
    (["optimizers", "--steps", "3", "--optimizers", "SGD", "Adam"], ["optimizers.json"]),
    (["moving-stats", "--steps", "3", "--momenta", "0.9"], ["moving_stats.json"]),
])
def test_cli_commands(tmp_path, capsys, argv, files):
    out = tmp_path / "res"
    assert main(["experiment", *argv, "--out", str(out), "--no-plots"]) == 0
    for name in files:
        assert (out / name).is_file()
    assert capsys.readouterr().out


def test_cli_bad_momentum_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["experiment", "moving-stats", "--momenta", "1.5", "--out", str(tmp_path / "r"), "--no-plots"])
    assert e.value.code == 2
    assert "argument --momenta: 1.5 is not in [0, 1]" in capsys.readouterr().err


def test_optimizers_gif(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    from normlab.experiments import optimizers as E

    res = E.run(steps=4, learning_rates=(0.01,), optimizers=("SGD",), surfaces=("quadratic",), plots=False,
                out_dir=tmp_path, print_fn=lambda *a: None)
    E._gif(res["results"]["quadratic"], tmp_path / "q.gif", frames=3, last_step=4)  # run(gif=True) draws 31 frames
    assert (tmp_path / "q.gif").read_bytes()[:6] == b"GIF89a"
