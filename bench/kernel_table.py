"""Run the kernel benchmarks several times and print the median table (PERFORMANCE.md).

Usage:  python -m bench.kernel_table [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    medians: dict[tuple[int, int, str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            out = Path(tmp) / f"run-{run}.json"
            subprocess.run(
                [sys.executable, "-m", "pytest", "bench/test_matching.py", "--benchmark-only",
                 "-q", "-p", "no:cacheprovider", f"--benchmark-json={out}"],
                check=True, stdout=subprocess.DEVNULL,
            )
            for case in json.loads(out.read_text())["benchmarks"]:
                info = case["extra_info"]
                medians[info["orders"], info["skus"], info["impl"]].append(
                    case["stats"]["median"])
            print(f"run {run + 1} of {args.runs} done", file=sys.stderr)
    print("| orders | SKUs | py | c | c orders/s | c vs py |")
    print("|---:|---:|---:|---:|---:|---:|")
    for orders, skus in sorted({k[:2] for k in medians}):
        py = statistics.median(medians[orders, skus, "py"])
        c = statistics.median(medians[orders, skus, "c"])
        print(f"| {orders} | {skus} | {py * 1e6:,.0f} µs | {c * 1e6:,.1f} µs | "
              f"{orders / c / 1e6:.1f} M | {py / c:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
