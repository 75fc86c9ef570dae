"""``mpiexec -n 2 normlab train --config run.toml`` with ``[training] distribute = "DataParallel"``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")

import normlab  # noqa: E402
from normlab.cli.train import train_from_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_data_parallel import numpy_kernels, run_mpi  # noqa: E402,F401

CONFIG = """
[data]
dataset = "moons"
[[layers]]
type = "Dense"
units = 8
use_bias = false
dtype = "float64"
[[layers]]
type = "BatchNormalization"
synchronized = true
dtype = "float64"
[[layers]]
type = "Activation"
activation = "relu"
dtype = "float64"
[[layers]]
type = "Dense"
units = 2
activation = "softmax"
dtype = "float64"
[training]
epochs = 2
batch_size = 32
{distribute}
[output]
model = "m.npz"
history = "h.json"
"""


def test_mpiexec_normlab_train_matches_one_process(tmp_path, numpy_kernels):
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    two = tmp_path / "two" / "run.toml"
    two.write_text(CONFIG.format(distribute='distribute = "DataParallel"'))
    one = tmp_path / "one" / "run.toml"
    one.write_text(CONFIG.format(distribute=""))
    proc = run_mpi("-m", "normlab", "train", "--config", two, "--quiet", timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("saved the model to") == 1  # rank 0 alone prints and writes
    train_from_config(str(one), verbose=0, print_fn=lambda *a: None)
    a, b = normlab.load_model(tmp_path / "two" / "m.npz"), normlab.load_model(tmp_path / "one" / "m.npz")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-10, atol=1e-12)
    assert a.optimizer.iterations == b.optimizer.iterations
    assert not list((tmp_path / "two").glob("*.resume.*"))  # the finished run removed its checkpoint


def test_distribute_must_name_a_strategy(tmp_path):
    from normlab.cli.train import ConfigError

    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(distribute='distribute = "Horovod"'))
    with pytest.raises(ConfigError, match=r"\[training\] 'distribute' must be 'DataParallel'"):
        train_from_config(str(cfg), verbose=0, print_fn=lambda *a: None)
