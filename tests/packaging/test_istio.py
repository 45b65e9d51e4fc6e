"""deploy/istio/wasmplugin.yaml: schema-valid, mirrors the demo config, accepted by the real filter."""
import copy
import json
import re
import unittest

import yaml

from common import ROOT, envoy_validate, validate_manifest, yaml_docs

MANIFEST = ROOT / "deploy" / "istio" / "wasmplugin.yaml"
ISTIO_CLUSTER = "outbound|8090||tollgate-cache.tollgate.svc.cluster.local"


def filled():
    text = MANIFEST.read_text()
    text = text.replace("__TOLLGATE_WASM_URL__", "oci://registry.example.com/tollgate/filter:0.1.0")
    return yaml_docs(text.replace("__TOLLGATE_WASM_SHA256__", "0" * 64))


def by_kind(docs, kind):
    return next(d for d in docs if d["kind"] == kind)


def template_stats_tags():
    tmpl = (ROOT / "envoy" / "tollgate.yaml.tmpl").read_text()
    return yaml.safe_load(re.sub(r"\$\{[A-Z_]+\}", "0", tmpl))["stats_config"]["stats_tags"]


class IstioManifestTest(unittest.TestCase):
    def test_placeholders(self):
        text = MANIFEST.read_text()
        self.assertEqual(1, len(re.findall(r'^\s+url: "__TOLLGATE_WASM_URL__"', text, re.M)))
        self.assertEqual(1, len(re.findall(r'^\s+sha256: "__TOLLGATE_WASM_SHA256__"', text, re.M)))

    def test_schemas(self):
        docs = filled()
        self.assertEqual(["WasmPlugin", "DestinationRule", "EnvoyFilter"], [d["kind"] for d in docs])
        for doc in docs:
            validate_manifest(self, doc)

    def test_plugin_config_mirrors_demo(self):
        plugin = by_kind(filled(), "WasmPlugin")["spec"]
        self.assertEqual("HTTP", plugin["type"])
        config = plugin["pluginConfig"]
        demo = json.loads((ROOT / "envoy" / "demo-config.json").read_text())
        expected = copy.deepcopy(demo)
        expected["stopOnHeaders"] = False  # WasmPlugin cannot set allow_on_headers_stop_iteration
        expected["cache"]["cluster"] = ISTIO_CLUSTER
        expected["cache"]["authority"] = "tollgate-cache.tollgate.svc.cluster.local"
        self.assertEqual(expected, config)

    def test_cache_cluster_matches_destination_rule(self):
        docs = filled()
        host = by_kind(docs, "DestinationRule")["spec"]["host"]
        self.assertEqual(f"outbound|8090||{host}", by_kind(docs, "WasmPlugin")["spec"]["pluginConfig"]["cache"]["cluster"])

    def test_stats_tags_match_envoy_template(self):
        patch = by_kind(filled(), "EnvoyFilter")["spec"]["configPatches"][0]
        self.assertEqual("BOOTSTRAP", patch["applyTo"])
        self.assertEqual(template_stats_tags(), patch["patch"]["value"]["stats_config"]["stats_tags"])
        selector = by_kind(filled(), "WasmPlugin")["spec"]["selector"]["matchLabels"]
        self.assertEqual(selector, by_kind(filled(), "EnvoyFilter")["spec"]["workloadSelector"]["labels"])

    def test_real_filter_accepts_plugin_config(self):
        config = by_kind(filled(), "WasmPlugin")["spec"]["pluginConfig"]
        log = envoy_validate(self, config, stop_on_headers=False)
        self.assertIn("stopOnHeaders=false", log)

    def test_schema_rejects_typos(self):
        plugin = by_kind(filled(), "WasmPlugin")
        bad = copy.deepcopy(plugin)
        bad["spec"]["pluginconfig"] = bad["spec"].pop("pluginConfig")
        with self.assertRaises(AssertionError):
            validate_manifest(self, bad)
        bad = copy.deepcopy(plugin)
        bad["spec"]["sha256"] = "sha256:" + "0" * 64  # Istio wants the bare hex
        with self.assertRaises(AssertionError):
            validate_manifest(self, bad)


if __name__ == "__main__":
    unittest.main()
