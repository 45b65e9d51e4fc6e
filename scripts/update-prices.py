#!/usr/bin/env python3
"""Refresh filter/data/prices.json from LiteLLM's model price table.

LiteLLM (MIT licence, Copyright (c) 2023 Berri AI) maintains `model_prices_and_context_window.json`
and ships a copy in its PyPI wheel. We download the wheel (no install), extract that file, keep the
text-generation models of the providers Tollgate meters, and keep LiteLLM's own field names so an
operator can paste entries from the upstream file into the filter's `pricing.models` override.

Usage: scripts/update-prices.py [--version 1.109.1]
"""
import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "filter" / "data" / "prices.json"
PROVIDERS = {
    "openai",
    "text-completion-openai",
    "anthropic",
    "deepseek",
    "gemini",
    "vertex_ai-language-models",
    "cohere_chat",
}
MODES = {"chat", "completion", "responses"}
FIELDS = [
    "litellm_provider",
    "mode",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "max_input_tokens",
    "max_output_tokens",
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="1.109.1")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp,
             f"litellm=={args.version}"],
            check=True,
        )
        wheel = next(pathlib.Path(tmp).glob("litellm-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            raw = z.read("litellm/model_prices_and_context_window_backup.json")
    table = json.loads(raw)
    models = {}
    for name, entry in sorted(table.items()):
        if not isinstance(entry, dict) or "/" in name:
            continue
        if entry.get("mode") not in MODES or entry.get("litellm_provider") not in PROVIDERS:
            continue
        if "input_cost_per_token" not in entry or "output_cost_per_token" not in entry:
            continue
        models[name] = {k: entry[k] for k in FIELDS if entry.get(k) is not None}
    doc = {
        "source": f"litellm=={args.version} litellm/model_prices_and_context_window_backup.json",
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "license": "MIT, Copyright (c) 2023 Berri AI (https://github.com/BerriAI/litellm)",
        "models": models,
    }
    OUT.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(models)} models to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
