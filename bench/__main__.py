"""``python -m bench`` — run every benchmark scenario and print one table of figures and ratios.

    python -m bench                 # all scenarios, full size
    python -m bench --quick         # smaller runs (a few minutes)
    python -m bench --only outbox   # one module (outbox, sandbox, smtp_ingest, api_ingest, …)
    python -m bench --compare bench/results/OLD.json

Each figure is the median of several runs. The results and the environment go to
bench/results/<time>.json so that two runs can be compared.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import ROOT, environment

# Scenario modules, in the order the table shows them. A module that is missing is reported, not fatal.
MODULES = [
    "sandbox",
    "outbox",
    "smtp_ingest",
    "api_ingest",
    "scale",
    "sendas",
    "memory",
    "lifecycle",
    "chaos",
    "faults",
]


def print_rows(rows: list[dict[str, Any]], previous: dict[str, Any] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    before = {(r["scenario"], r["metric"]): r["value"] for r in (previous or {}).get("rows", [])}
    table = Table("scenario", "metric", "value", "ratio", "baseline / notes", *(["vs previous"] if before else []))
    for r in rows:
        value = r["value"]
        shown = f"{value:,}" if isinstance(value, int | float) else str(value)
        cells = [
            r["scenario"],
            r["metric"],
            f"{shown} {r.get('unit', '')}".strip(),
            "" if r.get("ratio") is None else f"{r['ratio']:.2f}",
            " ".join(str(x) for x in (r.get("baseline"), r.get("notes")) if x),
        ]
        if before:
            old = before.get((r["scenario"], r["metric"]))
            cells.append(f"{value / old:.2f}x" if isinstance(old, int | float) and old else "")
        table.add_row(*cells)
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--only", action="append", help="run only this module (repeatable)")
    parser.add_argument("--compare", type=Path, help="an earlier results JSON to compare with")
    parser.add_argument("--out", type=Path, help="where to write the results JSON")
    args = parser.parse_args(argv)
    env = environment()
    print(
        f"m365relay benchmarks — {env['cpu']}, {env['cpus']} CPUs, Python {env['python']}, "
        f"SQLite {env['sqlite']}, commit {env['commit']}{' (quick)' if args.quick else ''}"
    )
    rows: list[dict[str, Any]] = []
    for name in args.only or MODULES:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                rows.append({"scenario": name, "metric": "not available", "value": "", "unit": ""})
                continue
            raise
        started = time.monotonic()
        print(f"… {name}", file=sys.stderr, flush=True)
        try:
            rows += module.run(quick=args.quick)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            traceback.print_exc()
            rows.append({"scenario": name, "metric": "error", "value": f"{type(exc).__name__}: {exc}", "unit": ""})
        print(f"  {name} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    previous = json.loads(args.compare.read_text()) if args.compare else None
    print_rows(rows, previous)
    out = args.out or ROOT / "bench" / "results" / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "quick": args.quick, "rows": rows}, indent=2))
    print(f"results: {out}")
    return 1 if any(r["metric"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
