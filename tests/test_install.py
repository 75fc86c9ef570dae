"""The installs users have: the core without numba, and numba without a writable cache folder.

Each case runs in a fresh interpreter, because what is checked happens when
normlab is imported. numba's cache folders are taken away without needing
file permissions (the tests may run as root, which ignores them): the home
and cache variables point under a regular file, where no folder can be made,
and numba's own ``NUMBA_CACHE_LOCATOR_CLASSES`` leaves out the folder inside
the package. ``.ci/run`` repeats the check on an installed wheel made
read-only, run by an unprivileged user.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Trains and predicts an MLP with a softmax output, saves and loads it, and
# prints what the backend chose. Arguments: the model file.
SMOKE = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import normlab
    from normlab.kernels import _backend
    from normlab.layers import Activation, BatchNormalization, Dense

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    model = normlab.Sequential([
        Dense(16, use_bias=False), BatchNormalization(), Activation("relu"),
        Dense(3, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, seed=0)
    p = model.predict(x)
    assert p.shape == (96, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5), p[:3]
    model.save(sys.argv[1])
    q = normlab.load_model(sys.argv[1]).predict(x)
    assert np.array_equal(p, q), np.abs(p - q).max()
    print("numba_enabled", _backend.numba_enabled())
    print("NUMBA_CACHE_DIR", os.environ.get("NUMBA_CACHE_DIR"))
    """
)

# Blocks numba's import, as on a core install, before running SMOKE.
NO_NUMBA = "import sys; sys.modules['numba'] = None\n"

# Compiles one small cached kernel (cheap) and prints where numba's cache is.
PROBE = textwrap.dedent(
    """
    import os
    import numpy as np
    import normlab
    from normlab.kernels import _backend
    print("numba_enabled", _backend.numba_enabled())
    print("NUMBA_CACHE_DIR", os.environ.get("NUMBA_CACHE_DIR"))
    print("kept", _backend.numba_cache_enabled())
    if _backend.numba_enabled():
        from normlab.kernels import checks
        assert checks.sum_squares(np.arange(4.0)) == 14.0
    else:
        try:
            _backend.use_numba(True)
        except ImportError as e:
            print("use_numba", e)
    """
)


def _run(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )


def _report(out: str) -> dict:
    """The ``name value`` lines the scripts print."""
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _isolated_env(tmp_path: Path, **extra: str) -> dict:
    """An environment whose home and cache folders cannot be created, even by root."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file: nothing can be created under it\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NUMBA_") and k != "NORMLAB_DISABLE_NUMBA"}
    env.update(HOME=str(blocker / "home"), XDG_CACHE_HOME=str(blocker / "cache"), TMPDIR=str(tmp))
    env.update(extra)
    return env


def _numba_with_locator_override():
    numba = pytest.importorskip("numba")
    from numba.core import config

    if not hasattr(config, "CACHE_LOCATOR_CLASSES"):
        pytest.skip(f"numba {numba.__version__} cannot leave out the in-package cache folder")


# numba's locators without the package's __pycache__ (writable to root even when chmod'ed)
NO_IN_TREE = "UserProvidedCacheLocator,UserWideCacheLocator"
# ... and without NUMBA_CACHE_DIR either: no folder at all can work
NOTHING = "UserWideCacheLocator"


def test_core_install_trains_saves_and_loads_a_softmax_model(tmp_path):
    """Without numba (import blocked as on a core install) every kernel takes the NumPy path."""
    r = _run(NO_NUMBA + SMOKE, _isolated_env(tmp_path), str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    assert _report(r.stdout)["numba_enabled"] == "False"
    assert r.stderr == ""


def test_softmax_helpers_do_not_touch_numba_when_it_is_off(monkeypatch):
    """The row-kernel check asks whether numba is on before it asks the numba module."""
    import numpy as np

    from normlab.kernels import _backend, activations

    monkeypatch.setattr(activations, "_nbsm", None)  # as without numba
    monkeypatch.setattr(_backend, "_enabled", False)
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    assert not activations.small_rows(z)
    np.testing.assert_allclose(activations.softmax(z).sum(axis=1), 1.0, rtol=1e-6)


KERNELS = Path(__file__).resolve().parent.parent / "src" / "normlab" / "kernels"
KERNEL_MODULES = sorted(p.stem for p in KERNELS.glob("_*_numba.py"))
# Imports every numba kernel module; each must fail with ImportError, as a missing extra does.
IMPORT_ALL = textwrap.dedent(
    f"""
    import importlib
    for name in {KERNEL_MODULES!r}:
        try:
            importlib.import_module("normlab.kernels." + name)
        except ImportError as e:
            print(name, "ImportError", e)
        else:
            print(name, "imported")
    """
)


def test_numba_kernel_modules_without_numba_raise_import_error():
    r = _run(NO_NUMBA + IMPORT_ALL, dict(os.environ))
    assert r.returncode == 0, r.stderr
    report = _report(r.stdout)
    assert sorted(report) == sorted(KERNEL_MODULES)
    assert all(v.startswith("ImportError") for v in report.values()), report


def test_no_cache_folder_falls_back_to_a_private_temporary_folder(tmp_path):
    _numba_with_locator_override()
    env = _isolated_env(tmp_path, NUMBA_CACHE_LOCATOR_CLASSES=NO_IN_TREE)
    r = _run(PROBE, env)
    assert r.returncode == 0, r.stderr
    expected = tmp_path / "tmp" / f"normlab-numba-cache-{os.getuid()}"
    report = _report(r.stdout)
    assert report == {"numba_enabled": "True", "NUMBA_CACHE_DIR": str(expected), "kept": "True"}
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and str(expected) in lines[0] and "NUMBA_CACHE_DIR" in lines[0], r.stderr
    assert stat.S_IMODE(expected.stat().st_mode) == 0o700
    assert list(expected.rglob("*.nbi")), "the kernel was not cached in the temporary folder"
    # a second run reuses the folder
    r2 = _run(PROBE, env)
    assert r2.returncode == 0 and _report(r2.stdout)["NUMBA_CACHE_DIR"] == str(expected), r2.stderr


@pytest.mark.parametrize("spoil", ["group-writable", "symlink"])
def test_temporary_folder_others_could_write_is_not_used(tmp_path, spoil):
    """The cache holds code that numba loads: a shared or redirected folder gets a fresh one instead."""
    _numba_with_locator_override()
    env = _isolated_env(tmp_path, NUMBA_CACHE_LOCATOR_CLASSES=NO_IN_TREE)
    stable = tmp_path / "tmp" / f"normlab-numba-cache-{os.getuid()}"
    if spoil == "symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        stable.symlink_to(target)
    else:
        stable.mkdir()
        stable.chmod(0o777)
    r = _run(PROBE, env)
    assert r.returncode == 0, r.stderr
    report = _report(r.stdout)
    assert report["kept"] == "False"  # every run compiles again: the compile notice says so
    used = Path(report["NUMBA_CACHE_DIR"])
    assert used.parent == tmp_path / "tmp" and used.name.startswith("normlab-numba-cache-") and used != stable
    assert not used.exists(), "the one-off folder is removed at exit"
    assert not list(stable.rglob("*.nbi"))
    if spoil == "symlink":
        assert not list(target.rglob("*.nbi"))
    assert len(r.stderr.splitlines()) == 1, r.stderr


def test_no_writable_folder_at_all_uses_the_numpy_kernels(tmp_path):
    _numba_with_locator_override()
    env = _isolated_env(tmp_path, NUMBA_CACHE_LOCATOR_CLASSES=NOTHING)
    r = _run(SMOKE, env, str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    assert _report(r.stdout) == {"numba_enabled": "False", "NUMBA_CACHE_DIR": "None"}
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "NumPy kernels" in lines[0] and "NUMBA_CACHE_DIR" in lines[0], r.stderr
    r = _run(PROBE, env)
    assert "use_numba use_numba(True): the numba kernels are off: no writable folder" in r.stdout, r.stdout
    # whoever imports a kernel module gets an ImportError, not numba's RuntimeError
    r = _run(IMPORT_ALL, env)
    assert r.returncode == 0, r.stderr
    report = _report(r.stdout)
    assert all(v.startswith("ImportError") and "NUMBA_CACHE_DIR" in v for v in report.values()), report


@pytest.mark.parametrize("locators", [NO_IN_TREE, NOTHING])
def test_disable_numba_needs_no_cache_folder_and_says_nothing(tmp_path, locators):
    _numba_with_locator_override()
    env = _isolated_env(tmp_path, NUMBA_CACHE_LOCATOR_CLASSES=locators, NORMLAB_DISABLE_NUMBA="1")
    r = _run(SMOKE, env, str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    assert _report(r.stdout)["numba_enabled"] == "False"
    assert r.stderr == ""


def test_writable_numba_cache_dir_is_used_silently(tmp_path):
    _numba_with_locator_override()
    chosen = tmp_path / "chosen"
    env = _isolated_env(tmp_path, NUMBA_CACHE_LOCATOR_CLASSES=NO_IN_TREE, NUMBA_CACHE_DIR=str(chosen))
    r = _run(PROBE, env)
    assert r.returncode == 0, r.stderr
    assert _report(r.stdout) == {"numba_enabled": "True", "NUMBA_CACHE_DIR": str(chosen), "kept": "True"}
    assert r.stderr == ""
    assert list(chosen.rglob("*.nbi"))
    assert not (tmp_path / "tmp" / f"normlab-numba-cache-{os.getuid()}").exists()
