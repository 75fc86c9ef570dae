import subprocess
import sys

import pytest

from normlab.cli.main import main


def test_demo_tiny(capsys):
    pytest.importorskip("sklearn")
    assert main(["demo", "--steps", "40", "--eval-every", "20"]) == 0
    out = capsys.readouterr().out
    assert "test acc (no BN)" in out and "final: without BN" in out
    rows = [l for l in out.splitlines() if l.strip() and l.split()[0].isdigit()]
    assert [int(r.split()[0]) for r in rows] == [0, 20, 40]


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])
    assert main([]) == 2


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "normlab", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "normlab" in r.stdout


def test_demo_compares_both_placements(capsys):
    pytest.importorskip("sklearn")
    assert main(["demo", "--steps", "20", "--eval-every", "10", "--placement", "both", "--optimizer", "adam", "--lr", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "test acc (BN before)" in out and "test acc (BN after)" in out and "adam" in out
