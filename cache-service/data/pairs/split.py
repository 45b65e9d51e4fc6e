#!/usr/bin/env python3
"""Splits the labelled pairs in sources/ into dev.jsonl and test.jsonl, deterministically.

Stratified by (source, kind): within each group, pairs are ordered by the SHA-256 of their id and
the first half (rounded down) goes to dev, the rest to test. No randomness, no dependency on the
Python version: re-running this script reproduces the committed files byte for byte.

    python3 cache-service/data/pairs/split.py
"""
import hashlib
import json
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ["fow-cache.jsonl", "tollgate.jsonl"]


def main() -> None:
    groups = defaultdict(list)
    for name in SOURCES:
        with open(HERE / "sources" / name, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    groups[(row["source"], row["kind"])].append(row)
    dev, test = [], []
    for key in sorted(groups):
        rows = sorted(groups[key], key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
        half = len(rows) // 2
        dev += rows[:half]
        test += rows[half:]
    for name, rows in (("dev.jsonl", dev), ("test.jsonl", test)):
        rows.sort(key=lambda r: r["id"])
        with open(HERE / name, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        same = sum(r["same"] for r in rows)
        print(f"{name}: {len(rows)} pairs, {same} same, {len(rows) - same} different")


if __name__ == "__main__":
    main()
