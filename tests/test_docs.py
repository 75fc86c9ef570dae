"""The documentation's code runs as written, and its value comments hold.

Every ```` ```python ```` block of README.md and docs/*.md runs: each file's
blocks in order, in one namespace (a block may use what an earlier block of
the same file defined), in a temporary working directory. A block fenced as
```` ```python no-run: REASON ```` is not run; the reason is required.

Value comments
--------------
A comment that starts with ``->`` states the value of the expression it
follows: on the same line (``expr  # -> VALUE``) or on the next line, alone
(``# -> VALUE`` after a line that is an expression). ``VALUE`` is written as
Python writes literals (numbers, strings, ``True`` / ``False`` / ``None``,
lists, tuples, dicts); NumPy values are compared through ``.tolist()``, and a
tuple matches a list of the same items. Numbers are compared to the
precision they are written with:

- ``12`` (no point, no exponent): exactly;
- ``0.97``, ``3e-07``, ``2.5e-3``: within half a unit of the last digit shown
  (``0.97`` means 0.965 to 0.975; ``3e-07`` means 2.5e-07 to 3.5e-07);
- ``<1e-6`` or ``>0.9`` (a ``<`` or ``>`` before a number): a bound.

A comment that is a bare literal holding a number (``# {'x': 1e-9}``) looks
like a value but would not be checked: it fails the test; write ``# -> ...``.

When a block needs an extra that is not installed (scikit-learn, matplotlib,
numba), the file's test is skipped with the reason, as the suite does in a
core-only environment.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTIONAL = {"sklearn": ("sklearn", "scikit-learn"), "matplotlib": ("matplotlib",), "numba": ("numba",), "h5py": ("h5py",),
            "onnx": ("onnx", "onnxruntime"), "onnxruntime": ("onnxruntime",), "mpi4py": ("mpi4py",)}

FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")


# ------------------------------------------------------------------ collecting
class Block:
    def __init__(self, path: Path, line: int, info: str, rest: str, source: str):
        self.path, self.line, self.info, self.rest, self.source = path, line, info, rest, source

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The fenced blocks whose info string starts with ``python`` (line = first code line)."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, body = i + 1, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if m.group(1) == "python":
            blocks.append(Block(path, start + 1, "python", m.group(2).strip(), "\n".join(body) + "\n"))
    return blocks


def test_every_doc_file_is_collected():
    names = {p.relative_to(ROOT).as_posix() for p in DOC_FILES}
    assert {"README.md", "docs/experiments.md", "docs/cnn.md", "docs/optimizers.md"} <= names
    assert all(python_blocks(ROOT / n) for n in ("README.md", "docs/cnn.md", "docs/optimizers.md", "docs/experiments.md"))


# ---------------------------------------------------------------- value comments
class _Bound:
    def __init__(self, op: str, text: str):
        self.op, self.limit, self.text = op, float(text), op + text

    def matches(self, value) -> bool:
        return _is_number(value) and (value < self.limit if self.op == "<" else value > self.limit)


class _Shown:
    """A number as written: exact for an int literal, else to half a unit of its last digit."""

    def __init__(self, text: str):
        self.text = text
        mantissa, _, exponent = text.lower().partition("e")
        self.exact = "." not in mantissa and not exponent
        self.value = float(text)
        decimals = len(mantissa.partition(".")[2])
        self.tol = 0.5 * 10.0 ** (int(exponent or 0) - decimals)

    def matches(self, value) -> bool:
        if not _is_number(value):
            return False
        if self.exact:
            return value == self.value
        # a little slack for the decimal text of the bound itself
        return abs(value - self.value) <= self.tol * (1 + 1e-9)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_value(text: str):
    """A value comment's text as a structure of literals, ``_Shown`` numbers and ``_Bound`` bounds."""
    toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    out, slots, i = [], {}, 0
    while i < len(toks):
        tok = toks[i]
        if tok.type == tokenize.OP and tok.string in "<>" and i + 1 < len(toks) and toks[i + 1].type == tokenize.NUMBER:
            key = f"__slot{len(slots)}__"
            slots[key] = _Bound(tok.string, toks[i + 1].string)
            out.append(repr(key))
            i += 2
            continue
        if tok.type == tokenize.NUMBER:
            neg = out and out[-1] == "-" and (len(out) == 1 or out[-2] in "([{:,")
            if neg:
                out.pop()
            key = f"__slot{len(slots)}__"
            slots[key] = _Shown(("-" if neg else "") + tok.string)
            out.append(repr(key))
        elif tok.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT):
            out.append(tok.string)
        i += 1
    tree = ast.literal_eval(" ".join(out))

    def fill(node):
        if isinstance(node, str) and node in slots:
            return slots[node]
        if isinstance(node, dict):
            return {fill(k): fill(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(fill(v) for v in node)
        return node

    return fill(tree)


def _plain(value):
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        return value.tolist()
    return value


def matches(expected, value) -> bool:
    value = _plain(value)
    if isinstance(expected, (_Shown, _Bound)):
        return expected.matches(value)
    if isinstance(expected, dict):
        return (
            isinstance(value, dict)
            and list(value) == list(expected)
            and all(matches(expected[k], value[k]) for k in expected)
        )
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(expected)
            and all(matches(e, v) for e, v in zip(expected, value))
        )
    return type(expected) is type(value) and expected == value


def show(expected) -> str:
    if isinstance(expected, (_Shown, _Bound)):
        return expected.text
    if isinstance(expected, dict):
        return "{" + ", ".join(f"{k!r}: {show(v)}" for k, v in expected.items()) + "}"
    if isinstance(expected, (list, tuple)):
        inner = ", ".join(show(v) for v in expected)
        return f"({inner})" if isinstance(expected, tuple) else f"[{inner}]"
    return repr(expected)


@pytest.mark.parametrize(
    "text,value,ok",
    [
        ("3e-07", 2.956e-07, True),
        ("3e-07", 3.6e-07, False),
        ("0.97", 0.9749, True),
        ("0.97", 0.9751, False),
        ("12", 12, True),
        ("12", 12.4, False),
        ("-0.5", -0.54, True),
        ("<1e-6", 3e-7, True),
        ("<1e-6", 2e-6, False),
        (">0.9", 0.95, True),
        ("{'x': <1e-6, 'beta': 1e-09}", {"x": 3e-7, "beta": 1.09e-9}, True),
        ("{'x': <1e-6, 'beta': 1e-09}", {"beta": 1.09e-9, "x": 3e-7}, False),
        ("(8, 4, 4, 3)", (8, 4, 4, 3), True),
        ("[0.5, 'a']", np.array([0.5, 0.5])[:1].tolist() + ["a"], True),
        ("'relu'", "relu", True),
        ("True", 1, False),
    ],
)
def test_value_comment_convention(text, value, ok):
    assert matches(parse_value(text), value) is ok


# ------------------------------------------------------------ running a block
def _comments(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment (text after ``#``, stripped)."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string[1:].strip()))
    return out


def _looks_like_a_value(text: str) -> bool:
    try:
        node = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return False

    def has_number(v):
        if isinstance(v, dict):
            return any(has_number(x) for x in v.values())
        if isinstance(v, (list, tuple, set)):
            return any(has_number(x) for x in v)
        return _is_number(v)

    return has_number(node)


def value_checks(block: Block) -> tuple[dict[int, tuple], list[str]]:
    """``{last line of an expression statement: (stated value, where)}``, and the problems found."""
    tree = ast.parse(block.source)
    expr_at_end = {node.end_lineno for node in tree.body if isinstance(node, ast.Expr)}
    checks, problems = {}, []
    src_lines = block.source.splitlines()
    for line, text in _comments(block.source):
        where = f"{block.path.relative_to(ROOT)}:{block.line + line - 1}"
        if text.startswith("->"):
            own_line = src_lines[line - 1].lstrip().startswith("#")
            target = line - 1 if own_line else line
            if own_line:  # skip further comment-only lines between the expression and this one
                while target > 0 and src_lines[target - 1].lstrip().startswith("#"):
                    target -= 1
            if target not in expr_at_end:
                problems.append(f"{where}: '# ->' must follow an expression statement")
                continue
            try:
                checks[target] = (parse_value(text[2:].strip()), where)
            except (ValueError, SyntaxError) as exc:
                problems.append(f"{where}: cannot read the value {text[2:].strip()!r}: {exc}")
        elif _looks_like_a_value(text):
            problems.append(f"{where}: the comment {text!r} looks like a value; write it as '# -> {text}'")
    return checks, problems


def _missing_extra(exc: ImportError) -> str | None:
    text = f"{getattr(exc, 'name', '') or ''} {exc}"
    for module, names in OPTIONAL.items():
        if importlib.util.find_spec(module) is None and any(n in text for n in names):
            return module
    return None


def run_block(block: Block, namespace: dict) -> None:
    checks, problems = value_checks(block)
    assert not problems, "\n".join(problems)
    tree = ast.parse(block.source, filename=block.where)
    for node in tree.body:
        check = checks.get(node.end_lineno) if isinstance(node, ast.Expr) else None
        if check is not None:
            expected, where = check
            code = compile(ast.Expression(node.value), block.where, "eval")
            value = eval(code, namespace)
            assert matches(expected, value), f"{where}: the comment says {show(expected)}, the value is {value!r}"
        else:
            exec(compile(ast.Module([node], type_ignores=[]), block.where, "exec"), namespace)


@pytest.mark.parametrize(
    "path", [p for p in DOC_FILES if python_blocks(p)], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_doc_blocks_run(path, tmp_path, monkeypatch):
    blocks = python_blocks(path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for block in blocks:
        if block.rest.startswith("no-run"):
            reason = block.rest[len("no-run"):].strip(" :")
            assert reason, f"{block.where}: a 'python no-run' block must say why it is not run"
            continue
        assert not block.rest, f"{block.where}: unknown fence option {block.rest!r} (only 'no-run: REASON')"
        try:
            run_block(block, namespace)
        except ImportError as exc:
            extra = _missing_extra(exc)
            if extra is None:
                raise
            pytest.skip(f"{block.where} needs {extra}, which is not installed")
        ran += 1
    assert ran, f"{path.name}: every block is no-run"


def _block(source: str) -> Block:
    return Block(ROOT / "README.md", 1, "python", "", source)


def test_a_wrong_value_comment_fails_and_a_right_one_passes():
    ns: dict = {}
    run_block(_block("x = 0.5\nx * 2  # -> 1.0\n(x, [x])\n# -> (0.5, [0.50])\n"), ns)
    with pytest.raises(AssertionError, match="the comment says 0.9"):
        run_block(_block("x = 0.5\nx * 2  # -> 0.9\n"), ns)
    with pytest.raises(AssertionError, match="looks like a value"):
        run_block(_block("x = 0.5\nx  # 0.5\n"), ns)
    with pytest.raises(AssertionError, match="must follow an expression"):
        run_block(_block("y = 2  # -> 2\n"), ns)


# ---------------------------------------------------------------- result tables
def _figures():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_doc_tables_are_their_results_rendered():
    """Each generated table is exactly what docs/figures.py renders from docs/results (no hand edits)."""
    fig = _figures()
    results = fig.load_results(fig.RESULTS)
    assert {"mnist1d", "regularization"} <= set(results)
    for doc in fig.DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert fig.rewrite(text, results) == text, f"{doc}: a table differs from docs/results; python docs/figures.py --write-docs"


def test_every_table_block_belongs_to_a_set_and_every_set_is_shown():
    fig = _figures()
    found = [m for doc in fig.DOCS for m in fig.markers((ROOT / doc).read_text(encoding="utf-8"))]
    owned = {m for fs in fig.SETS.values() for m in fs.blocks}
    assert set(found) == owned
    for name, data in fig.load_results(fig.RESULTS).items():
        assert data["meta"]["set"] == name and data["meta"]["command"] == fig.SETS[name].command


def test_rerun_and_rewrite_on_a_cheap_configuration(tmp_path):
    """Rerun two sets in a tiny configuration, rewrite a copy of the docs: the tables follow, twice is once."""
    pytest.importorskip("sklearn")  # the toy data sets of the regularization experiment
    fig = _figures()
    root, results = tmp_path / "tree", tmp_path / "results"
    for doc in fig.DOCS:
        (root / doc).parent.mkdir(parents=True, exist_ok=True)
        (root / doc).write_text((ROOT / doc).read_text(encoding="utf-8"), encoding="utf-8")
    before = {doc: (root / doc).read_text(encoding="utf-8") for doc in fig.DOCS}
    argv = ["--root", str(root), "--results", str(results)]
    assert fig.main(["regularization", "mnist1d", "--quick", *argv]) == 0
    assert fig.main(["--check", *argv]) == 1  # the copies still show the committed tables
    assert fig.main(["--write-docs", *argv]) == 0
    after = {doc: (root / doc).read_text(encoding="utf-8") for doc in fig.DOCS}
    assert fig.main(["--check", *argv]) == 0
    assert fig.main(["--write-docs", *argv]) == 0
    assert {doc: (root / doc).read_text(encoding="utf-8") for doc in fig.DOCS} == after  # idempotent

    reg = json.loads((results / "regularization.json").read_text())
    exp = after["docs/experiments.md"]
    block = exp[exp.index("<!-- figures: regularization -->"):]
    block = block[: block.index("<!-- /figures -->")]
    for name, d in reg["results"]["datasets"].items():
        cells = [f"{a:.2f}".removeprefix("0") for a in d["test_accuracy"]]  # no scikit-learn column in --quick
        assert f"| {name} | " + " | ".join(cells) + " |" in block.splitlines()
    assert "python docs/figures.py regularization --write-docs" in block
    # blocks of the sets that were not rerun are left alone
    for doc in fig.DOCS:
        for m in fig.markers(before[doc]):
            if fig._owner(m) not in ("regularization", "mnist1d"):
                assert _block_text(after[doc], m) == _block_text(before[doc], m)
    assert _block_text(after["README.md"], "mnist1d") == _block_text(after["docs/experiments.md"], "mnist1d")


def _block_text(text: str, marker: str) -> str:
    start = text.index(f"<!-- figures: {marker} -->")
    return text[start : text.index("<!-- /figures -->", start)]


def test_rerun_gives_the_documented_tables(tmp_path):
    """Opt-in, slow: NORMLAB_RERUN_FIGURES=regularization[,mnist1d,...] reruns those sets in full."""
    names = [n for n in os.environ.get("NORMLAB_RERUN_FIGURES", "").split(",") if n]
    if not names:
        pytest.skip("opt-in: NORMLAB_RERUN_FIGURES=regularization (about 20 s) reruns a set and compares its tables")
    fig = _figures()
    from normlab.kernels import _backend

    committed = fig.load_results(fig.RESULTS)
    for name in names:
        data = committed[name]
        if not fig.SETS[name].path_independent and data["meta"]["numba"] != _backend.numba_enabled():
            pytest.skip(f"{name}'s tables were made {'with' if data['meta']['numba'] else 'without'} numba")
        # the BLAS's kernels and numba's code are chosen per CPU, and each sums in its own order
        made_on, here = data["meta"].get("machine"), fig.machine_kernels()
        if made_on != here:
            pytest.skip(f"{name}'s tables were made with other CPU-specific kernels ({made_on}; here {here})")
        fresh = fig.run_set(name, tmp_path, None)
        for marker, render in fig.SETS[name].blocks.items():
            assert render(fresh["results"]) == render(data["results"]), f"{name}: {marker}"


def test_readme_links_are_absolute():
    """The README is also the package index's page, where relative links break."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'(?:src|href)="([^"]+)"', text)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert not relative, f"relative links in README.md: {relative}"
    for t in targets:
        if t.startswith("https://github.com/normlab/normlab/"):
            kind, rest = t.removeprefix("https://github.com/normlab/normlab/").split("/main/", 1)
            path = ROOT / rest
            assert (kind == "blob" and path.is_file()) or (kind == "tree" and path.is_dir()), t
