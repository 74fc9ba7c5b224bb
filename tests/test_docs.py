"""Docs that cannot go stale: the layout in docs/architecture.md matches the live tree, every repository path
the docs and docstrings name exists, every ``bench ...`` command they show parses with the CLI's own (Typer /
click) parser, docs/backbones.md has the sections the code cites, nothing cites a tracker number, and the README's
commands are the ones CI runs."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer
import typer.main

from peft3d.devtools import arch

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", REPO / "results" / "README.md", *(REPO / "docs").glob("*.md")])
TRACKED = [REPO / p for p in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                                            check=True).stdout.split()]
PY = [p for p in TRACKED if p.suffix == ".py" and p.exists()]
TOP_DIRS = ("peft3d", "docs", "tests", "benchmarks", ".ci", "results")
# outputs a run writes under results/ (documented, not part of the repository)
OUTPUTS = ("results/runs", "results/tables", "results/mlflow.db", "results/report", "results/cache",
           "results/tune", "results/optuna.db", "results/submitit", "results/submissions.jsonl", "results/claims",
           "results/checkpoints")
EXTERNAL = {"DATASET.md"}  # Point-BERT's dataset notes, cited with their repository


# -- docs/architecture.md ------------------------------------------------------------------------------------

def test_architecture_layout_matches_the_tree():
    found = arch.problems()
    assert not found, "docs/architecture.md is stale (run: python -m peft3d.devtools.arch):\n" + "\n".join(found)


def test_the_layout_check_sees_a_new_file(tmp_path):
    pkg, doc = tmp_path / "peft3d", tmp_path / "architecture.md"
    (pkg / "core").mkdir(parents=True)
    (pkg / "core" / "a.py").write_text("x = 1\n" * 100)
    doc.write_text(arch.render(arch.scan(pkg)))
    assert arch.problems(doc, pkg) == []
    (pkg / "core" / "b.py").write_text("y = 2\n")
    assert arch.problems(doc, pkg) == ["peft3d/core/: files added ['b.py'], removed []"]
    (pkg / "core" / "b.py").unlink()
    (pkg / "core" / "a.py").write_text("x = 1\n" * 120)  # 20% more lines: past the allowed drift
    assert arch.problems(doc, pkg) == ["peft3d/core/: 120 lines, the doc says 100"]


# -- paths named in docs and docstrings ----------------------------------------------------------------------

REPO_PATH = re.compile(rf"(?<![\w./~-])((?:{'|'.join(map(re.escape, TOP_DIRS))})/[\w./*-]*[\w*])")
RELATIVE_PATH = re.compile(r"(?<![\w./~:-])([a-z_]+(?:/[\w-]+)*/[\w-]+\.(?:py|md|yaml|yml|json|sh|txt))\b")
MD_NAME = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")


def exists(ref: str, here: Path) -> bool:
    ref = ref.rstrip(".")
    if ref.startswith(OUTPUTS) or ref in EXTERNAL:
        return True
    for base in (REPO, REPO / "peft3d", REPO / "docs", here.parent):
        hits = list(base.glob(ref)) if "*" in ref else [base / ref]
        if any(h.exists() for h in hits):
            return True
    return False


def prose(path: Path) -> str:
    """What a reader reads: a markdown file (less the generated layout, checked above), or a Python file's
    docstrings and comments (string literals in code are data: run names, output files)."""
    import ast
    import io
    import tokenize

    text = path.read_text()
    if path.suffix == ".md":
        return re.sub(re.escape(arch.BEGIN) + ".*?" + re.escape(arch.END), "", text, flags=re.S)
    nodes = ast.walk(ast.parse(text))
    docs = [ast.get_docstring(n) or "" for n in nodes
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    comments = [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]
    return "\n".join(docs + comments)


def cited_paths(path: Path) -> set[str]:
    text = prose(path)
    refs = set(REPO_PATH.findall(text)) | set(MD_NAME.findall(text))
    if path.suffix == ".md":  # the docs also name files relative to peft3d/ (`core/spec.py`)
        refs |= set(RELATIVE_PATH.findall(text))
    return refs


@pytest.mark.parametrize("path", DOCS + PY, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_named_exists(path):
    missing = sorted(r for r in cited_paths(path) if not exists(r, path))
    assert not missing, f"{path.relative_to(REPO)} names files that are not in the repository: {missing}"


def test_backbones_md_has_every_section_the_code_cites():
    text = (REPO / "docs" / "backbones.md").read_text()
    sections = {m.group(1) for m in re.finditer(r"^## (\d+)\. ", text, re.M)}
    items = {(s, i) for s in sections for i in range(1, 10)}
    pitfalls = {int(m.group(1)) for m in re.finditer(r"^(\d+)\. \*\*", text.split("## Pitfalls")[1], re.M)}
    for path in PY:
        src = path.read_text()
        for sec, item in re.findall(r"backbones\.md §(\d+)(?:\.(\d+))?", src):
            assert sec in sections and (not item or (sec, int(item)) in items), f"{path.name}: §{sec}.{item}"
        for n in re.findall(r"backbones\.md pitfall (\d+)", src):
            assert int(n) in pitfalls, f"{path.name}: pitfall {n}"
        if "backbones.md" in src and '"Shared facts"' in src:
            assert "## Shared facts" in text


# -- bench commands shown in the docs ------------------------------------------------------------------------

def shown_commands() -> list[tuple[str, str, bool]]:
    """``(where, command, whole)`` of every ``bench ...`` line of a bash block (``whole``: it must run as shown)
    and every inline `bench ...` span of the prose (a fragment: it names a sub-command and some of its options)."""
    out = []
    for path in DOCS:
        text = path.read_text()
        for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
            out += [(path.name, line.split(" #")[0].strip(), True) for line in block.splitlines()
                    if line.strip().startswith("bench ")]
        out += [(path.name, " ".join(span.split()), False) for span in re.findall(r"`(bench [^`]+)`", text)]
    return out


def alternatives(command: str) -> list[str]:
    """``bench ls a | b | c`` (one of a, b, c) -> the three commands."""
    first, *rest = [p.strip() for p in command.split(" | ")]
    return [first] + [first.rsplit(" ", 1)[0] + " " + alt for alt in rest]


def parse(command: str, whole: bool = True) -> None:
    """Parse ``command`` exactly as ``bench`` would, without running it (click's own parser). A fragment gets a
    placeholder for each required parameter it leaves out, and may end in an option named without its value."""
    from peft3d.cli.app import _mount, app

    _mount()
    group = typer.main.get_command(app)
    args = shlex.split(command)[1:]
    if not whole:
        cmd = group.commands.get(args[0]) if args else None
        if cmd is None:
            raise typer.BadParameter(f"no sub-command {args[:1]}")
        if args[-1].startswith("--") and any(args[-1] in p.opts and not p.is_flag for p in cmd.params
                                             if hasattr(p, "is_flag")):
            args = args[:-1]
        positional = [a for a in args[1:] if not a.startswith("-")]
        for p in cmd.params:  # "1": a placeholder every parameter type here accepts (names, paths, numbers)
            if p.param_type_name == "argument" and p.required and not positional:
                args += ["1"]
            elif p.param_type_name == "option" and p.required and not set(p.opts) & set(args):
                args += [p.opts[0], "1"]
    ctx = group.make_context("bench", list(args), resilient_parsing=False)
    # click keeps the sub-command's name apart from its arguments (``_protected_args`` since click 8.2)
    head = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
    name, cmd, rest = group.resolve_command(ctx, [*head, *ctx.args])
    cmd.make_context(name, rest, parent=ctx)


def test_every_bench_command_in_the_docs_parses():
    shown = shown_commands()
    assert sum(whole for *_, whole in shown) >= 30  # README, docs/*.md: the extraction found them
    bad = []
    for where, command, whole in shown:
        for one in alternatives(command):
            try:
                parse(one, whole)
            except typer.TyperException as e:  # the parser's errors (typer vendors click)
                bad.append(f"{where}: `{one}`: {e.format_message()}")
    assert not bad, "commands shown in the docs that bench rejects:\n" + "\n".join(bad)


def test_the_parser_check_rejects_what_bench_rejects():
    with pytest.raises(typer.BadParameter, match="valid integer"):
        parse("bench run --grid quickstart --jobs auto")
    with pytest.raises(typer.TyperException, match="requires an argument"):
        parse("bench run --grid")
    parse("bench run --grid quickstart --devices auto")
    parse("bench table --compare-to", whole=False)  # prose naming an option
    with pytest.raises(typer.TyperException, match="No such option"):
        parse("bench table --versuss x", whole=False)


# -- tracker numbers -----------------------------------------------------------------------------------------

TRACKER = re.compile(r"\b(?:issue|issues|ticket|pull request|PR)\s*#?\d+\b", re.I)
HASH_NUMBER = re.compile(r"(?<![\w&#:/])#\d{1,5}\b(?![0-9a-fA-F])")  # "#12"; not a colour, not an anchor


def test_no_tracker_numbers_in_code_or_docs():
    hits = []
    for path in TRACKED:
        if path.suffix not in (".py", ".md", ".yaml", ".yml", ".sh", ".toml") and path.name != "run":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if TRACKER.search(line) or (path.suffix == ".md" and HASH_NUMBER.search(line)):
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()[:100]}")
    assert not hits, "tracker numbers mean nothing to a reader; say what and why instead:\n" + "\n".join(hits)


def test_the_tracker_check_finds_what_it_looks_for():
    word = "issue"  # spelled apart so this file does not cite a tracker number itself
    assert TRACKER.search(f"as in {word} 12") and TRACKER.search(f"see {word.title()} #3")
    assert not TRACKER.search("CVPR 2015")
    assert HASH_NUMBER.search("fixed in #12.") and not HASH_NUMBER.search("color:#335") \
        and not HASH_NUMBER.search("sample #7a")


# -- the README's commands are what CI runs ------------------------------------------------------------------

def test_readme_commands_install_the_constraints_and_ci_runs_the_test_command():
    readme = (REPO / "README.md").read_text()
    commands = [line for block in re.findall(r"^```bash\n(.*?)^```", readme, re.M | re.S)
                for line in block.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2 and all(" -c constraints.txt " in c for c in commands), commands
    test_command = commands[1]
    assert "pytest -q" not in test_command and "-p randomly" in test_command  # the header shows the seed
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, ".ci/run must run the README's test command verbatim"
    pinned = {line.split("==")[0].lower() for line in (REPO / "constraints.txt").read_text().splitlines()
              if "==" in line}
    assert {"torch", "transformers", "timm", "peft", "pytest-randomly"} <= pinned
    assert "peft3d" not in pinned


# -- the SweetHome3D class table shown in docs/protocol.md is the one the code applies ----------------------------

def _class_table_block(text: str) -> str:
    section = text.split("### The SweetHome3D class table", 1)[1]
    return section.split("```text\n", 1)[1].split("\n```", 1)[0]


def test_protocol_shows_the_class_table_the_code_applies():
    from peft3d.datasets import sh3f

    shown = _class_table_block((REPO / "docs" / "protocol.md").read_text())
    assert shown == sh3f.class_table_text(), "docs/protocol.md's class table is stale: paste `bench data info " \
                                             "sweethome3d`'s class table (peft3d/datasets/sh3f.py class_table_text)"
    assert "(img/sweethome3d_contact_sheet.png)" in (REPO / "docs" / "protocol.md").read_text()


def test_the_class_table_check_sees_an_edited_rule():
    from peft3d.datasets import sh3f

    doc = f"### The SweetHome3D class table\n\n```text\n{sh3f.class_table_text()}\n```\n"
    assert _class_table_block(doc) == sh3f.class_table_text()
    edited = doc.replace("not freezer", "not fridge")
    assert _class_table_block(edited) != sh3f.class_table_text()
