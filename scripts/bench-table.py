#!/usr/bin/env python3
"""Merges the JSON files the benchmark binaries wrote into one table and one JSON file.

Every numeric figure of every file becomes one row `bench  figure  value`, the figure named by its
path in the file (e.g. `execute.p50Ms`), so the same row can be compared across versions. Usage:
  scripts/bench-table.py --out target/bench/all.json target/bench/worker.json ...
"""
import argparse
import json
import os
import subprocess
import sys


def flatten(value, path, rows):
    if isinstance(value, bool):
        rows.append((path, int(value)))
    elif isinstance(value, (int, float)):
        rows.append((path, value))
    elif isinstance(value, dict):
        for key, inner in value.items():
            flatten(inner, f"{path}.{key}" if path else str(key), rows)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            # Lists of named entries read better by name than by position.
            name = inner.get("name") if isinstance(inner, dict) else None
            flatten(inner, f"{path}.{name or i}" if path else str(name or i), rows)


def version():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="merged JSON file to write")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    benches = {}
    missing = []
    for path in args.files:
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path) as f:
                benches[name] = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            missing.append(f"{path}: {e}")
    rows = []
    for name, value in benches.items():
        figures = []
        flatten(value, "", figures)
        rows.extend((name, figure, number) for figure, number in figures)
    merged = {
        "version": version(),
        "figures": [{"bench": b, "figure": f, "value": v} for b, f, v in rows],
    }
    with open(args.out, "w") as f:
        json.dump(merged, f, indent=2)
    width_b = max([len("bench")] + [len(b) for b, _, _ in rows])
    width_f = max([len("figure")] + [len(f) for _, f, _ in rows])
    print(f"{'bench':<{width_b}}  {'figure':<{width_f}}  value")
    for bench, figure, value in rows:
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{bench:<{width_b}}  {figure:<{width_f}}  {shown}")
    print(f"\n{len(rows)} figures from {len(benches)} benchmarks ({merged['version']}) -> {args.out}")
    if missing:
        print("missing or unreadable:\n  " + "\n  ".join(missing), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
