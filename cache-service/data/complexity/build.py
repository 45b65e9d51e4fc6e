#!/usr/bin/env python3
"""Builds train.jsonl and test.jsonl from sources/ (and ../pairs/sources/) byte for byte.

Labels are assigned by one rule per source (see README.md); the split is by SHA-256 of the
prompt: a prompt whose hash, read as an integer, is 0-29 mod 100 goes to test, the rest to train.
Run from anywhere: python3 cache-service/data/complexity/build.py
"""
import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAIRS = HERE.parent / "pairs" / "sources"
TEST_PERCENT = 30
PAIRS_QUESTIONS = 180


def h(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def examples():
    out = []
    # HumanEval (MIT): complex unless the reference solution is a single line.
    for d in read(HERE / "sources" / "humaneval.jsonl"):
        label = "simple" if d["solution_lines"] <= 1 else "complex"
        out.append({"prompt": d["prompt"], "label": label, "source": "humaneval:" + d["task_id"]})
    # GSM8K (MIT): complex when the reference answer takes 3 or more calculation steps.
    for d in read(HERE / "sources" / "gsm8k.jsonl"):
        label = "complex" if d["steps"] >= 3 else "simple"
        out.append({"prompt": d["question"], "label": label, "source": "gsm8k:" + d["id"]})
    # Project-authored prompts (CC0), labelled one by one.
    for d in read(HERE / "sources" / "tollgate.jsonl"):
        out.append({"prompt": d["prompt"], "label": d["label"], "source": "tollgate:" + d["id"]})
    # Cached-question pairs: the first question of each pair (fow-cache CC BY 4.0, tollgate CC0),
    # de-duplicated case-insensitively, the PAIRS_QUESTIONS with the smallest hash: all simple
    # (FAQ and look-up questions).
    seen = {}
    for name in ("fow-cache.jsonl", "tollgate.jsonl"):
        for d in read(PAIRS / name):
            key = d["a"].strip().lower()
            if key not in seen:
                seen[key] = (d["a"], d["source"] + ":" + d["id"])
    picked = sorted(seen.values(), key=lambda qa: h(qa[0]))[:PAIRS_QUESTIONS]
    for q, src in picked:
        out.append({"prompt": q, "label": "simple", "source": "pairs:" + src})
    # Drop exact duplicate prompts (first wins).
    uniq, keys = [], set()
    for d in out:
        if d["prompt"] not in keys:
            keys.add(d["prompt"])
            uniq.append(d)
    return uniq


def main():
    train, test = [], []
    for d in sorted(examples(), key=lambda d: h(d["prompt"])):
        (test if int(h(d["prompt"]), 16) % 100 < TEST_PERCENT else train).append(d)
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        with open(HERE / name, "w", encoding="utf-8") as f:
            for d in rows:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        c = sum(d["label"] == "complex" for d in rows)
        print(f"{name}: {len(rows)} prompts, {c} complex, {len(rows) - c} simple")


if __name__ == "__main__":
    main()
