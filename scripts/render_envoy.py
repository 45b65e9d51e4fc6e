#!/usr/bin/env python3
"""Render an Envoy template: render_envoy.py OUT KEY=VALUE...

TEMPLATE=name picks the template in envoy/ (default tollgate.yaml.tmpl), PLUGIN_CONFIG=@file reads
JSON, POOL=host:base_port:n fills POOL_ENDPOINTS for envoy/pool.yaml.tmpl with n replicas on
consecutive ports (as tollgate_tests::sim::pool::envoy_endpoints does).
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent
out = pathlib.Path(sys.argv[1])
args = [a.partition("=") for a in sys.argv[2:]]
template = next((v for k, _, v in args if k == "TEMPLATE"), "tollgate.yaml.tmpl")
text = (root / "envoy" / template).read_text()


def pool_endpoints(spec):
    host, base, n = spec.split(":")
    items = [
        f'{{endpoint: {{address: {{socket_address: {{address: "{host}", port_value: {int(base) + i}}}}}}}, '
        f'metadata: {{filter_metadata: {{envoy.lb: {{hash_key: "replica-{i}"}}}}}}}}'
        for i in range(int(n))
    ]
    return "[" + ", ".join(items) + "]"


for key, _, value in args:
    if key == "TEMPLATE":
        continue
    if key == "POOL":
        key, value = "POOL_ENDPOINTS", pool_endpoints(value)
    if value.startswith("@"):
        value = json.dumps(json.loads(pathlib.Path(value[1:]).read_text()), separators=(",", ":"))
        value = value.replace("'", "''")
    text = text.replace("${" + key + "}", value)
if any("${" in line for line in text.splitlines() if not line.lstrip().startswith("#")):
    sys.exit("render_envoy.py: unsubstituted placeholder left in the template")
out.write_text(text)
