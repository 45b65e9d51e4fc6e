"""Shared helpers of the packaging tests (stdlib unittest + PyYAML; jsonschema, kubernetes-validate
and helm-python-sdk when installed: tests/packaging/requirements.txt)."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "tollgate_filter.wasm"
ENVOY = ROOT / ".venv" / "bin" / "envoy"
K8S_VERSIONS = ("1.29.0", "1.37.0")  # the chart's floor-ish and kubernetes-validate's newest

try:
    import jsonschema
except ImportError:  # pragma: no cover
    jsonschema = None
try:
    import kubernetes_validate
except ImportError:  # pragma: no cover
    kubernetes_validate = None

needs_jsonschema = unittest.skipIf(jsonschema is None, "jsonschema not installed (tests/packaging/requirements.txt)")
needs_k8s = unittest.skipIf(kubernetes_validate is None, "kubernetes-validate not installed (tests/packaging/requirements.txt)")

CRDS = json.loads((ROOT / "tests" / "packaging" / "schemas" / "crds.json").read_text())["schemas"]


def yaml_docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def crd_schema(doc):
    group_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    group = group_version.split("/")[0]
    return CRDS.get(f"{group_version}/{kind}") or CRDS.get(f"{group}/{kind}")


def validate_manifest(test, doc):
    """Kubernetes built-ins against kubernetes-validate's bundled schemas (strict: unknown fields
    fail), custom resources against tests/packaging/schemas/crds.json."""
    schema = crd_schema(doc)
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if schema is not None:
        if jsonschema is None:
            test.skipTest("jsonschema not installed")
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
        test.assertEqual([], [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors])
        return
    if kubernetes_validate is None:
        test.skipTest("kubernetes-validate not installed")
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:  # noqa: PERF203
            test.fail(f"{where} invalid for Kubernetes {version}: {e}")
        except kubernetes_validate.SchemaNotFoundError:
            test.fail(f"{where}: no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version}")


def envoy_validate(test, plugin_config, stop_on_headers):
    """Loads the real filter with `plugin_config` in the real Envoy (`--mode validate`): the filter's
    on_configure refuses unknown fields and bad values, so this proves the config is accepted."""
    if not (ENVOY.exists() and WASM.exists()):
        test.skipTest("needs .venv/bin/envoy and the built .wasm (make wasm)")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        cfg = pathlib.Path(tmp, "plugin.json")
        cfg.write_text(json.dumps(plugin_config))
        out = pathlib.Path(tmp, "envoy.yaml")
        subprocess.run(
            ["python3", str(ROOT / "scripts" / "render_envoy.py"), str(out), "LISTEN_PORT=0", "ADMIN_PORT=0",
             f"WASM={WASM}", f"PLUGIN_CONFIG=@{cfg}", f"STOP_ON_HEADERS={'true' if stop_on_headers else 'false'}",
             "OPENAI_HOST=127.0.0.1", "OPENAI_PORT=1", "ANTHROPIC_HOST=127.0.0.1", "ANTHROPIC_PORT=1",
             "CACHE_HOST=127.0.0.1", "CACHE_PORT=1", f"ACCESS_LOG={tmp}/access.log"],
            check=True)
        return run_envoy_validate(test, out)


def run_envoy_validate(test, config_path):
    if not (ENVOY.exists() and WASM.exists()):
        test.skipTest("needs .venv/bin/envoy and the built .wasm (make wasm)")
    r = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(config_path), "-l", "info"],
                       capture_output=True, text=True, timeout=120)
    log = r.stdout + r.stderr
    test.assertEqual(0, r.returncode, log[-3000:])
    test.assertIn("tollgate: configured", log)
    return log


def prometheus_metric_names(expr):
    """tollgate_* metric names in a PromQL expression, histogram suffixes removed."""
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\btollgate_[a-z0-9_]+", expr)}


def known_metric_names():
    """Metric names documented in the README or registered by the cache service."""
    names = set(re.findall(r"\btollgate_[a-z0-9_]+", (ROOT / "README.md").read_text()))
    for path in (ROOT / "cache-service" / "src").rglob("*.rs"):
        names |= set(re.findall(r'"(tollgate_[a-z0-9_]+)"', path.read_text()))
    return names


def which(name):
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + str(ROOT / ".venv" / "bin"))
