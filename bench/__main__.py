"""Run every benchmark script in ``bench/`` with its default (bounded) arguments.

.venv/bin/python -m bench              # all of them, one after another
.venv/bin/python -m bench service_espeak vits_cpu   # just these
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).parent


def scripts(names: list[str]) -> list[Path]:
    found = sorted(p for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_"))
    if not names:
        return found
    by_name = {p.stem: p for p in found}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]


def main(argv: list[str]) -> int:
    failed: list[str] = []
    for script in scripts(argv):
        print(f"\n=== {script.stem} ===", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script)], check=False)
        print(f"=== {script.stem}: exit {result.returncode}, {time.monotonic() - started:.0f} s")
        if result.returncode != 0:
            failed.append(script.stem)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
