"""normlab demo, the command line's conventions, and the compile notice."""

import io
import os
import subprocess
import sys

import pytest

from normlab.cli.demo import describe
from normlab.cli.main import build_parser, main
from normlab.kernels import _backend
from normlab.kernels._compile_notice import compile_notice

COMMANDS = [
    ["demo"],
    ["train"],
    ["experiment"],
    ["experiment", "bn-paper"],
    ["experiment", "regularization"],
    ["experiment", "mnist1d"],
    ["experiment", "normprop"],
    ["experiment", "optimizers"],
    ["experiment", "moving-stats"],
    ["bench"],
    ["warmup"],
]


def run_cli(args, env=None, **kwargs):
    """``python -m normlab args`` as a user would run it, stdout and stderr as pipes."""
    return subprocess.run(
        [sys.executable, "-m", "normlab", *args], capture_output=True, text=True,
        env=dict(os.environ, **(env or {})), **kwargs,
    )


def test_demo_tiny(capsys):
    pytest.importorskip("sklearn")
    assert main(["demo", "--steps", "40", "--eval-every", "20"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("normlab demo: 3 x 100 sigmoid units") and "40 steps each" in lines[0]
    assert lines[1].startswith("  on digits (1437 train / 360 test), batches of 60")
    # one line per network as it finishes, then the table, then the sentence
    assert lines[2].startswith("  no BN:") and lines[3].startswith("  BN:")
    assert "test acc (no BN)" in lines[4]
    rows = [l for l in lines if l.strip() and l.split()[0].isdigit()]
    assert [int(r.split()[0]) for r in rows] == [0, 20, 40]
    sentence = " ".join(lines[lines.index(rows[-1]) + 1:])
    assert sentence.startswith("The table gives the test accuracy every 20 training steps: after 40 steps")
    final_bn, final_base = (float(c) for c in rows[-1].split()[1:][::-1])
    assert f"{100 * final_bn:.1f} % with batch normalization" in sentence
    assert f"{100 * final_base:.1f} % without it" in sentence


def test_demo_compares_both_placements(capsys):
    pytest.importorskip("sklearn")
    assert main(["demo", "--steps", "20", "--eval-every", "10", "--placement", "both", "--optimizer", "adam", "--lr", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "test acc (BN before)" in out and "test acc (BN after)" in out and "adam" in out
    assert "with batch normalization before the sigmoid" in " ".join(out.split())


def _curve(*accs, every=100):
    return {"curve": [(i * every, a) for i, a in enumerate(accs)]}


@pytest.mark.parametrize(
    "bn, base, verdict",
    [
        ((0.1, 0.9, 0.95), (0.1, 0.1, 0.2), "learn faster and end higher"),
        ((0.1, 0.9, 0.95), (0.1, 0.3, 0.93), "learn faster, though both ended within 2.0 points"),
        ((0.1, 0.9, 0.80), (0.1, 0.3, 0.93), "learn faster but end 13.0 points lower"),
        ((0.1, 0.3, 0.95), (0.1, 0.6, 0.85), "batch normalization ended 10.0 points higher"),
        ((0.1, 0.6, 0.93), (0.1, 0.6, 0.95), "made little difference here"),
        ((0.1, 0.2, 0.30), (0.1, 0.6, 0.95), "did not help"),
    ],
)
def test_describe_says_what_the_table_shows(bn, base, verdict):
    text = describe({"baseline": _curve(*base), "bn": _curve(*bn)}, steps=200, eval_every=100)
    assert text.startswith("The table gives the test accuracy every 100 training steps: after 200 steps")
    assert f"{100 * bn[-1]:.1f} % with batch normalization" in text
    assert f"{100 * base[-1]:.1f} % without it" in text
    assert text.endswith(verdict + ".")
    first = next((i * 100 for i, a in enumerate(bn) if a > 0.5), None)
    assert (f"above 50 % from step {first}" if first is not None else "never above 50 %") in text


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["demo", "--steps", "0"])
    assert e.value.code == 2
    assert "normlab demo: error: argument --steps: must be >= 1, got 0" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_a_bad_flag_prints_the_usage_of_its_own_command(cmd, capsys):
    required = ["--config", "x.toml"] if cmd == ["train"] else []
    with pytest.raises(SystemExit) as e:
        main(cmd + required + ["--bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    prog = "normlab " + " ".join(cmd)
    assert err.startswith(f"usage: {prog} ")
    assert f"{prog}: error: unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("cmd", [[]] + COMMANDS, ids=lambda c: " ".join(c) or "normlab")
def test_help_is_free_of_rest_markup(cmd, capsys):
    with pytest.raises(SystemExit):
        main(cmd + ["--help"])
    out = capsys.readouterr().out
    for markup in ("`", ":func:", ":class:", ":data:", ":meth:"):
        assert markup not in out, f"{markup!r} in normlab {' '.join(cmd)} --help"
    assert not any(line.rstrip().endswith("::") for line in out.splitlines())


def test_plain_removes_rest_markup():
    from normlab.cli._common import plain

    doc = "Read it with :func:`normlab.load_model` or :class:`~normlab.Model`; ``x`` and `y`.\n\nThe file::\n"
    assert plain(doc) == "Read it with normlab.load_model or normlab.Model; x and y.\n\nThe file:\n"


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    from normlab.cli import demo

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_main", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err.strip() == "normlab demo: interrupted"


def test_every_command_is_listed():
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(choices) == sorted(c[0] for c in COMMANDS if len(c) == 1)


def test_demo_batch_size_larger_than_the_data_is_a_usage_error(capsys):
    pytest.importorskip("sklearn")
    with pytest.raises(SystemExit) as e:
        main(["demo", "--batch-size", "100000"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: normlab demo")
    assert "argument --batch-size: 100000 is more than the 1437 training images; use at most 1437" in err


def test_module_entry_point():
    r = run_cli(["--version"])
    assert r.returncode == 0 and "normlab" in r.stdout


def test_demo_without_scikit_learn_says_what_to_install_in_one_line():
    # as if scikit-learn were not installed: its import fails
    code = "import sys; sys.modules['sklearn'] = None; from normlab.cli.main import main; sys.exit(main(['demo']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, NORMLAB_DISABLE_NUMBA="1"))
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("normlab demo: ") and 'pip install "normlab[datasets]"' in lines[0]
    assert "scikit-learn" in lines[0]


# --------------------------------------------------------------- compile notice
def _fresh_kernel():
    nb = pytest.importorskip("numba")

    # a new function each call: numba has compiled nothing for it yet
    @nb.njit(cache=False)
    def add_one(x):
        return x + 1

    return add_one


def test_compile_notice_says_it_compiled_and_how_long(monkeypatch):
    if not _backend.numba_enabled():
        pytest.skip("numba kernels are off")
    kernel = _fresh_kernel()
    out = io.StringIO()
    with compile_notice(stream=out, prefix="normlab demo") as watch:
        assert kernel(1) == 2
    text = out.getvalue()
    assert text.startswith("normlab demo: compiling numba kernels (") and text.endswith(" s\n")
    assert text.count("\n") == 1 and f"done in {watch.seconds:.1f} s" in text
    assert watch.compiled == 1
    # compiled now: a second block says nothing
    out = io.StringIO()
    with compile_notice(stream=out) as watch:
        assert kernel(2) == 3
    assert out.getvalue() == "" and watch.compiled == 0


def test_compile_notice_ends_its_line_on_an_error():
    if not _backend.numba_enabled():
        pytest.skip("numba kernels are off")
    kernel = _fresh_kernel()
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with compile_notice(stream=out):
            kernel(1)
            raise RuntimeError("boom")
    assert out.getvalue().endswith("...\n")


def test_compile_notice_is_silent_without_numba(monkeypatch):
    monkeypatch.setattr(_backend, "_enabled", False)
    out = io.StringIO()
    with compile_notice(stream=out) as watch:
        pass
    assert out.getvalue() == "" and watch.compiled == 0


def test_first_run_announces_the_compilation_and_later_runs_do_not(tmp_path):
    """Two runs of ``normlab demo`` sharing an empty numba cache, stdout and stderr in one pipe.

    The pipe is also what ``normlab demo 2>&1 | cat`` sees: no carriage returns.
    """
    pytest.importorskip("sklearn")
    if not _backend.numba_enabled():
        pytest.skip("numba kernels are off")
    # count any compilation after the warm-up: there must be none (the notice covered them all)
    code = (
        "import sys\n"
        "from numba.core import event\n"
        "from normlab.cli import demo\n"
        "from normlab.cli.main import main\n"
        "late = []\n"
        "class L(event.Listener):\n"
        "    def on_start(self, ev): late.append(ev.data['dispatcher'].py_func.__name__)\n"
        "    def on_end(self, ev): pass\n"
        "warm_up = demo.warm_up\n"
        "def watched(work, prog):\n"
        "    warm_up(work, prog)\n"
        "    event.register('numba:compile', L())\n"
        "demo.warm_up = watched\n"
        "rc = main(['demo', '--steps', '30', '--eval-every', '10'])\n"
        "print('late compilations:', late)\n"
        "sys.exit(rc)\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    runs = [
        subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=env)
        for _ in range(2)
    ]
    first, second = (r.stdout.splitlines() for r in runs)
    assert [r.returncode for r in runs] == [0, 0]
    assert not any("\r" in r.stdout for r in runs)
    # first run: the two header lines (flushed at once), then the notice, on one line
    assert first[0].startswith("normlab demo: 3 x 100")
    notice = [l for l in first if "compiling" in l]
    assert len(notice) == 1 and first[2] == notice[0]
    assert notice[0].startswith("normlab demo: compiling numba kernels (once: later runs load them from the cache)... done in ")
    assert first[-1] == "late compilations: []"
    # second run: the kernels come from the cache, without a word
    assert not any("compiling" in l for l in second)
    assert second[-1] == "late compilations: []"
    # the same table both times (timings aside)
    table = lambda lines: [l for l in lines if " steps in " not in l and "compiling" not in l]  # noqa: E731
    assert table(first) == table(second)


def test_one_line_joins_a_multi_line_message():
    from normlab.cli._common import one_line

    text = "Could not find the files.\nSearched:\n  /a  (path argument)\n  /b  ($NORMLAB_DATA)\nTo fix this, get them"
    assert one_line(text) == "Could not find the files. Searched: /a (path argument); /b ($NORMLAB_DATA); To fix this, get them"
    assert one_line("one line") == "one line"


def test_check_writable_creates_nothing(tmp_path):
    from normlab.cli._common import CommandError, check_writable

    check_writable(tmp_path / "new" / "deeper" / "model.npz", "model file")  # folders that can be made: fine
    check_writable(tmp_path / "out", "output folder", folder=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(CommandError, match=r"f/m.npz: cannot create the model file or its folder: .*f is a file"):
        check_writable(tmp_path / "f" / "m.npz", "model file")
    with pytest.raises(CommandError, match=r"the output folder is a file, not a folder"):
        check_writable(tmp_path / "f", "output folder", folder=True)
    with pytest.raises(CommandError, match=r"the model file is a folder, not a file name"):
        check_writable(tmp_path, "model file")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(CommandError, match=r"link: the model file is a broken link"):
        check_writable(tmp_path / "link", "model file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "link"]


def test_every_exit_status_has_one_meaning(monkeypatch, capsys):
    from normlab.cli import demo
    from normlab.cli._common import CommandError, Interrupted, UsageError

    for exc, status in ((CommandError("failed\nhere"), 1), (UsageError("bad key"), 2), (Interrupted("kept x"), 130),
                        (PermissionError(13, "Permission denied", "/x/y"), 1)):
        def raising(args, exc=exc):
            raise exc

        monkeypatch.setattr(demo, "_main", raising)
        assert main(["demo"]) == status
        lines = [l for l in capsys.readouterr().err.splitlines() if l]
        assert len(lines) == 1 and lines[0].startswith("normlab demo: ")
    assert lines[0] == "normlab demo: /x/y: Permission denied"
