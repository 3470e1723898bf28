"""The README's field table is generated from the spec model and kept current."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _sync_docs():  # tools/ is not a package: load the script as a module
    spec = importlib.util.spec_from_file_location("sync_docs", ROOT / "tools" / "sync_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_lists_every_spec_field_with_its_default() -> None:
    sync_docs = _sync_docs()
    readme = (ROOT / "README.md").read_text()
    assert readme == sync_docs.readme_with_fields(readme), "run: make docs"


def test_field_table_covers_the_whole_spec() -> None:
    block = _sync_docs().readme_fields_block()
    for field in (
        "spec.model.engine",
        "spec.failover.windowSeconds",
        "spec.fallback.standbyReplicas",
    ):
        assert f"| `{field}` |" in block
    # every row has a default column (possibly empty for maps/lists)
    rows = [line for line in block.splitlines() if line.startswith("| `spec.")]
    assert len(rows) > 40
    assert all(line.count("|") >= 6 for line in rows)
