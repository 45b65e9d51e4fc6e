#!/usr/bin/env python3
"""Render envoy/tollgate.yaml.tmpl: render_envoy.py OUT KEY=VALUE... (PLUGIN_CONFIG=@file reads JSON)."""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent
out = pathlib.Path(sys.argv[1])
text = (root / "envoy" / "tollgate.yaml.tmpl").read_text()
for arg in sys.argv[2:]:
    key, _, value = arg.partition("=")
    if value.startswith("@"):
        value = json.dumps(json.loads(pathlib.Path(value[1:]).read_text()), separators=(",", ":"))
        value = value.replace("'", "''")
    text = text.replace("${" + key + "}", value)
if any("${" in line for line in text.splitlines() if not line.lstrip().startswith("#")):
    sys.exit("render_envoy.py: unsubstituted placeholder left in the template")
out.write_text(text)
