"""Mutation testing of the pure core (`make mutation`): mutmut, one module at a time.

Each module of tools/mutation.toml is mutated by mutmut (pinned in
requirements-dev.txt) in a staging folder of its own under build/mutation/
(gitignored): a copy of its package, its own fast unit tests (tests marked slow
are deselected) and a pytest and mutmut configuration. The working tree is never
touched, so others can keep running the tests meanwhile.

Per module: mutants killed, surviving, and judged equivalent (listed in
tools/mutation.toml with the reason; reported, not counted). The score is
killed / (mutants - equivalent); a mutant that times out counts as killed (the
tests noticed), one no selected test reaches counts as surviving.

Writes build/mutation/report.json (machine-readable) and, when every module ran,
the scores section of docs/mutation.md. Exits 1 when a module scores under
``fail_under``.

    python tools/mutation.py                       # every module
    python tools/mutation.py --module policy       # some modules
    python tools/mutation.py --changed-since origin/main   # modules whose code or tests changed
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tools" / "mutation.toml"
OUT = ROOT / "build" / "mutation"
REPORT = OUT / "report.json"
DOC = ROOT / "docs" / "mutation.md"
DOC_BEGIN = "<!-- mutation:begin -->"
DOC_END = "<!-- mutation:end -->"
MUTMUT = Path(sys.executable).parent / "mutmut"
# Copied next to the tests: the operator tests' helpers read the examples.
ALSO_COPY = ("examples",)
# A mutant can make a test wait forever (an await that never resolves uses no CPU, so
# mutmut's CPU-time limit never fires): each fast unit test gets 10 s, then it fails.
PYTEST_ARGS = ("-m", "not slow", "-p", "no:cacheprovider", "--hypothesis-seed=0", "--timeout=10")
# mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into what the score needs.
KILLED_CODES = {1, 3, 36, -24, 24, 152, 255}  # a failing test, or a timeout
SURVIVED_CODES = {0}
NO_TESTS_CODES = (5, 33)
# What mutmut says (and exits 1) when no selected test reaches any mutant.
NO_TEST_REACHES = "could not find any test case for any mutant"


@dataclass(frozen=True)
class CoreModule:
    name: str
    source: str  # e.g. operator/voiceops_operator/policy.py
    tests: tuple[str, ...]
    mutants: tuple[str, ...] = ()  # mutant-name globs within the module; () = all
    skip: tuple[str, ...] = ()  # mutant-name globs left out (with skip_reason)
    skip_reason: str = ""

    @property
    def package_dir(self) -> Path:
        """The top-level package holding the source (a module may sit in a subpackage)."""
        folder = Path(self.source).parent
        while (ROOT / folder.parent / "__init__.py").exists():
            folder = folder.parent
        return folder

    @property
    def _in_package(self) -> Path:
        return Path(self.source).relative_to(self.package_dir.parent)

    @property
    def staged_source(self) -> str:
        return f"src/{self._in_package.as_posix()}"

    @property
    def dotted(self) -> str:
        return ".".join(self._in_package.with_suffix("").parts)

    def functions(self) -> list[str]:
        """mutmut's names of the module's functions and methods: x_f, xǁClassǁm."""
        tree = ast.parse((ROOT / self.source).read_text())
        found: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append(f"x_{node.name}")
            elif isinstance(node, ast.ClassDef):
                found += [
                    f"xǁ{node.name}ǁ{item.name}"
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                ]
        return found

    def in_scope(self, mutant: str) -> bool:
        """Whether a mutant (its name within the module) belongs to this core module."""
        return not self.mutants or any(fnmatch.fnmatch(mutant, p) for p in self.mutants)

    def wanted(self, mutant: str) -> bool:
        """Whether a mutant in scope is run and judged (not skipped)."""
        return self.in_scope(mutant) and not any(fnmatch.fnmatch(mutant, p) for p in self.skip)

    def mutant_globs(self) -> list[str]:
        """What `mutmut run` is told to run: every wanted function's mutants."""
        if not self.mutants and not self.skip:
            return []
        return [
            f"{self.dotted}.{function}__mutmut_*"
            for function in self.functions()
            if self.wanted(f"{function}__mutmut_1")
        ]

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name).strip("-")


@dataclass(frozen=True)
class Equivalent:
    module: str
    function: str  # mangled: x_assess, xǁPolicyConfigǁ_ordered
    reason: str
    mutated: str = ""  # the mutated line(s), stripped, joined with " / "
    original: str = ""  # or: every mutant of this original line (an unreachable line)

    def matches(self, mutant: Mutant) -> bool:
        if self.function != mutant.function:
            return False
        if self.mutated:
            return self.mutated == mutant.mutated
        return bool(self.original) and self.original == mutant.original


@dataclass
class Mutant:
    name: str
    function: str
    status: str  # killed, survived, no tests, equivalent, not checked, other
    original: str = ""
    mutated: str = ""
    reason: str = ""


@dataclass
class ModuleResult:
    name: str
    source: str
    tests: list[str]
    seconds: float
    total: int = 0
    killed: int = 0
    survived: int = 0
    no_tests: int = 0
    equivalent: int = 0
    other: int = 0
    skipped: int = 0  # left out (not run, not counted): see skip_reason
    skip_reason: str = ""
    skipped_functions: list[str] = field(default_factory=list)
    score: float = 0.0
    survivors: list[Mutant] = field(default_factory=list)
    equivalents: list[Mutant] = field(default_factory=list)


def load_config(path: Path = CONFIG) -> tuple[float, list[CoreModule], list[Equivalent]]:
    data = tomllib.loads(path.read_text())
    modules = [
        CoreModule(
            m["name"],
            m["source"],
            tuple(m["tests"]),
            tuple(m.get("mutants", ())),
            tuple(m.get("skip", ())),
            m.get("skip_reason", ""),
        )
        for m in data["module"]
    ]
    equivalents = [Equivalent(**e) for e in data.get("equivalent", [])]
    return float(data.get("fail_under", 0.0)), modules, equivalents


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def stage(module: CoreModule, folder: Path) -> None:
    """A fresh folder mutmut runs in: the module's package, its tests, their helpers."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _copy_tree(ROOT / module.package_dir, folder / "src" / module.package_dir.name)
    for test in module.tests:
        test_dir = (ROOT / test).parent
        target_dir = folder / Path(test).parent
        target_dir.mkdir(parents=True, exist_ok=True)
        # The folder's conftest.py; the shared helpers come with tests/testsupport.
        if (test_dir / "conftest.py").exists():
            shutil.copy2(test_dir / "conftest.py", target_dir / "conftest.py")
        shutil.copy2(ROOT / test, folder / test)
    _copy_tree(ROOT / "tests" / "testsupport", folder / "tests" / "testsupport")
    for extra in ALSO_COPY:
        if (ROOT / extra).is_dir():
            _copy_tree(ROOT / extra, folder / extra)
    (folder / "pyproject.toml").write_text(_stage_pyproject(module))


def _toml_list(values: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _stage_pyproject(module: CoreModule) -> str:
    return "\n".join(
        [
            "[tool.pytest.ini_options]",
            'pythonpath = ["tests"]',
            'asyncio_mode = "auto"',
            'asyncio_default_fixture_loop_scope = "function"',
            "timeout = 120",
            'addopts = "--strict-markers"',
            'markers = ["slow: takes more than a few seconds"]',
            "",
            "[tool.mutmut]",
            f"source_paths = {_toml_list(['src/' + module.package_dir.name])}",
            f"only_mutate = {_toml_list([module.staged_source])}",
            f"also_copy = {_toml_list(list(ALSO_COPY))}",
            f"pytest_add_cli_args = {_toml_list(PYTEST_ARGS)}",
            f"pytest_add_cli_args_test_selection = {_toml_list(module.tests)}",
            "use_git_change_detection = false",
            "",
        ]
    )


def run_mutmut(module: CoreModule, folder: Path, jobs: int) -> int:
    log = folder / "mutmut.log"
    command = [str(MUTMUT), "run", "--max-children", str(jobs), *module.mutant_globs()]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as out:
        done = subprocess.run(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env)
    return done.returncode


def _status(exit_code: int | None) -> str:
    if exit_code in KILLED_CODES:
        return "killed"
    if exit_code in SURVIVED_CODES:
        return "survived"
    if exit_code in NO_TESTS_CODES:
        return "no tests"
    if exit_code is None:
        return "not checked"
    return f"other ({exit_code})"


# mutmut's own diff of each mutant (what `mutmut show` prints), all in one process.
_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({name: get_diff_for_mutant(name, path=sys.argv[1]) for name in sys.argv[2:]}))
"""


def diffs(folder: Path, module: CoreModule, names: list[str]) -> dict[str, tuple[str, str]]:
    """The original and the mutated line(s) of each mutant, joined with " / "."""
    if not names:
        return {}
    shown = subprocess.run(
        [sys.executable, "-c", _DIFFS, module.staged_source, *names],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, tuple[str, str]] = {}
    for name, diff in json.loads(shown).items():
        lines = diff.splitlines()
        removed = [
            ln[1:].strip() for ln in lines if ln.startswith("-") and not ln.startswith("---")
        ]
        added = [ln[1:].strip() for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
        found[name] = (" / ".join(removed), " / ".join(added))
    return found


def collect(
    module: CoreModule,
    folder: Path,
    equivalents: list[Equivalent],
    seconds: float,
    *,
    untested: bool = False,
) -> ModuleResult:
    """Judge one module's mutants; ``untested``: mutmut found no test reaching any of them."""
    meta = folder / "mutants" / f"{module.staged_source}.meta"
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    if untested:
        codes = dict.fromkeys(codes, NO_TESTS_CODES[0])
    result = ModuleResult(module.name, module.source, list(module.tests), round(seconds, 1))
    codes = {k: v for k, v in codes.items() if module.in_scope(k.rpartition(".")[2])}
    skipped = [k for k in codes if not module.wanted(k.rpartition(".")[2])]
    result.skipped = len(skipped)
    result.skip_reason = module.skip_reason if skipped else ""
    result.skipped_functions = sorted(
        {k.rpartition(".")[2].partition("__mutmut_")[0] for k in skipped}
    )
    codes = {k: v for k, v in codes.items() if k not in skipped}
    known = [e for e in equivalents if e.module == module.name]
    shown = diffs(folder, module, [k for k, v in codes.items() if _status(v) != "killed"])
    for name, code in sorted(codes.items(), key=lambda kv: _mutant_order(kv[0])):
        function = name.rpartition(".")[2].partition("__mutmut_")[0]
        mutant = Mutant(name, function, _status(code))
        result.total += 1
        if mutant.status == "killed":
            result.killed += 1
            continue
        mutant.original, mutant.mutated = shown[name]
        match = next((e for e in known if e.matches(mutant)), None)
        if match is not None and mutant.status == "survived":
            mutant.status, mutant.reason = "equivalent", match.reason
            result.equivalent += 1
            result.equivalents.append(mutant)
            continue
        if mutant.status == "survived":
            result.survived += 1
        elif mutant.status == "no tests":
            result.no_tests += 1
        else:
            result.other += 1
        result.survivors.append(mutant)
    counted = result.total - result.equivalent
    result.score = round(100.0 * result.killed / counted, 1) if counted else 100.0
    return result


def unmatched_equivalents(
    results: list[ModuleResult], equivalents: list[Equivalent]
) -> list[Equivalent]:
    """Listed equivalents of the modules that ran that no surviving mutant matched."""
    ran = {r.name for r in results}
    return [
        e
        for e in equivalents
        if e.module in ran
        and not any(e.matches(m) for r in results if r.name == e.module for m in r.equivalents)
    ]


def _mutant_order(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


def changed_modules(modules: list[CoreModule], since: str) -> list[CoreModule]:
    """Modules whose source or mapped tests differ from ``since`` (committed or not)."""
    listed = subprocess.run(
        ["git", "diff", "--name-only", since, "--"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    touched = set(listed) | set(untracked)
    return [m for m in modules if m.source in touched or touched & set(m.tests)]


def markdown(results: list[ModuleResult], seconds: float, jobs: int, fail_under: float) -> str:
    lines = [
        f"Last full run: mutmut {version('mutmut')}, {len(results)} modules, "
        f"{seconds / 60:.1f} min on {jobs} worker processes "
        f"(`make mutation`; threshold {fail_under:g} % per module).",
        "",
        "| module | tests | mutants | killed | survived | no tests | equivalent | score |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        tests = ", ".join(f"`{Path(t).name}`" for t in r.tests)
        lines.append(
            f"| `{r.source}` ({r.name}) | {tests} | {r.total} | {r.killed} | "
            f"{r.survived} | {r.no_tests} | {r.equivalent} | {r.score:.1f} % |"
        )
    for r in results:
        if r.skipped:
            functions = ", ".join(f"`{f}`" for f in r.skipped_functions)
            lines += [
                "",
                f"Skipped in {r.name} ({r.skipped} mutants of {functions}): {r.skip_reason}.",
            ]
    lines += ["", "### Equivalent mutants (not counted)", ""]
    equivalents = [(r, m) for r in results for m in r.equivalents]
    if not equivalents:
        lines.append("None.")
    for r, m in equivalents:
        lines.append(f"- {r.name} `{m.function}`: `{m.original}` → `{m.mutated}`. {m.reason}")
    lines += ["", "### Surviving mutants", ""]
    survivors = [(r, m) for r in results for m in r.survivors]
    if not survivors:
        lines.append("None.")
    for r, m in survivors:
        lines.append(f"- {r.name} `{m.function}` ({m.status}): `{m.original}` → `{m.mutated}`")
    return "\n".join(lines)


def write_doc(section: str, doc: Path = DOC) -> None:
    text = doc.read_text()
    head, sep, rest = text.partition(DOC_BEGIN)
    _, sep2, tail = rest.partition(DOC_END)
    if not sep or not sep2:
        raise RuntimeError(f"{doc} lacks the {DOC_BEGIN} … {DOC_END} markers")
    doc.write_text(f"{head}{DOC_BEGIN}\n{section}\n{DOC_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", help="run only this module (repeatable)")
    parser.add_argument("--changed-since", help="run only modules whose code or tests changed")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATION_JOBS", "2")))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="judge the last run's mutants again (e.g. after editing the equivalents)",
    )
    args = parser.parse_args(argv)
    fail_under, modules, equivalents = load_config(args.config)
    every = len(modules)
    if args.module:
        unknown = set(args.module) - {m.name for m in modules}
        if unknown:
            parser.error(f"unknown module(s) {sorted(unknown)}; known: {[m.name for m in modules]}")
        modules = [m for m in modules if m.name in args.module]
    if args.changed_since:
        modules = changed_modules(modules, args.changed_since)
        if not modules:
            print(f"no core module or its tests changed since {args.changed_since}")
            return 0
    started = time.monotonic()
    results: list[ModuleResult] = []
    for module in modules:
        folder = OUT / module.slug
        print(f"== {module.name}: {module.source} ({len(module.tests)} test files)", flush=True)
        module_started = time.monotonic()
        code = 0
        if not args.report_only:
            stage(module, folder)
            code = run_mutmut(module, folder, args.jobs)
        untested = NO_TEST_REACHES in (folder / "mutmut.log").read_text()
        if code != 0 and not untested:
            print(f"mutmut failed (exit {code}); see {folder / 'mutmut.log'}", file=sys.stderr)
            return 2
        timing = folder / "run.json"  # how long the last real run took (--report-only keeps it)
        if args.report_only:
            seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
        else:
            seconds = time.monotonic() - module_started
            timing.write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")
        result = collect(module, folder, equivalents, seconds, untested=untested)
        results.append(result)
        print(
            f"   {result.score:.1f} %: {result.killed} killed of {result.total - result.equivalent}"
            f" ({result.equivalent} equivalent, {result.survived} survived, "
            f"{result.no_tests} without tests) in {result.seconds:.0f}s",
            flush=True,
        )
        for m in result.survivors:
            print(f"   {m.status}: {m.name}: {m.original} -> {m.mutated}")
    seconds = time.monotonic() - started
    if args.report_only:
        seconds = sum(r.seconds for r in results)
    stale = unmatched_equivalents(results, equivalents)
    for e in stale:
        print(
            f"stale equivalent (matches no surviving mutant): {e.module} {e.function}: "
            f"{e.mutated or e.original}"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "tool": f"mutmut {version('mutmut')}",
                "jobs": args.jobs,
                "seconds": round(seconds, 1),
                "fail_under": fail_under,
                "modules": [asdict(r) for r in results],
                "stale_equivalents": [asdict(e) for e in stale],
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    print(f"report: {REPORT.relative_to(ROOT)} ({seconds:.0f}s)")
    if len(results) == every:
        write_doc(markdown(results, seconds, args.jobs, fail_under))
        print(f"scores: {DOC.relative_to(ROOT)}")
    low = [r for r in results if r.score < fail_under]
    for r in low:
        print(f"{r.name}: {r.score:.1f} % is under {fail_under:g} %", file=sys.stderr)
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
