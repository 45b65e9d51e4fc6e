"""deploy/helm/tollgate: rendered by Helm's own engine (helm-python-sdk) and validated against the
Kubernetes schemas (kubernetes-validate) and tests/packaging/schemas/crds.json."""
import json
import unittest

import yaml

from common import ROOT, envoy_validate, jsonschema, needs_jsonschema, validate_manifest, yaml_docs

CHART = ROOT / "deploy" / "helm" / "tollgate"
try:
    import helm_python as helm
except (ImportError, OSError):  # pragma: no cover - the wheel ships a native library
    helm = None
needs_helm = unittest.skipIf(helm is None, "helm-python-sdk not installed (tests/packaging/requirements.txt)")

FULL = {
    "redis": {"url": "redis://redis.tollgate:6379/0"},
    "replicaCount": 3,
    "autoscaling": {"enabled": True},
    "podDisruptionBudget": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "adminToken": {"value": "s3cret"},
    "config": {"cache": {"semantic": {"mode": "shadow"}}},
    "wasmPlugin": {"enabled": True, "sha256": "ab" * 32},
}


def render(values, namespace="tollgate", name="tollgate"):
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name=name, namespace=namespace)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith(".yaml"):
            docs += yaml_docs(text)
    return docs


def kinds(docs):
    return {d["kind"]: d for d in docs}


class ChartStaticTest(unittest.TestCase):
    def test_chart_metadata(self):
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        self.assertEqual("v2", chart["apiVersion"])
        self.assertEqual("tollgate", chart["name"])
        for key in ("version", "appVersion", "description"):
            self.assertTrue(chart.get(key), key)

    @needs_jsonschema
    def test_values_match_schema(self):
        schema = json.loads((CHART / "values.schema.json").read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        jsonschema.Draft7Validator(schema).validate(values)
        self.assertEqual(8090, values["service"]["port"])
        self.assertEqual("/healthz", values["probes"]["liveness"]["path"])
        self.assertEqual("/readyz", values["probes"]["readiness"]["path"])


@needs_helm
class ChartRenderTest(unittest.TestCase):
    def test_lint(self):
        result = helm.lint(str(CHART))
        self.assertEqual([], result["errors"])
        # severity 1 = info ("icon is recommended"); warnings (2) and errors (3) fail
        self.assertEqual([], [m for m in result["messages"] if m["severity"] >= 2])

    def test_default_embedded_store(self):
        docs = render({})
        k = kinds(docs)
        self.assertEqual({"ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"}, set(k))
        for doc in docs:
            validate_manifest(self, doc)
        dep = k["Deployment"]["spec"]
        self.assertEqual(1, dep["replicas"])
        self.assertEqual("Recreate", dep["strategy"]["type"])
        pod = dep["template"]["spec"]
        c = pod["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual("0.0.0.0:8090", env["TOLLGATE_LISTEN"]["value"])
        self.assertEqual("/var/lib/tollgate", env["TOLLGATE_DATA_DIR"]["value"])
        self.assertNotIn("TOLLGATE_REDIS_URL", env)
        self.assertNotIn("TOLLGATE_ADMIN_TOKEN", env)  # no token: the admin API stays off
        self.assertEqual("/healthz", c["livenessProbe"]["httpGet"]["path"])
        self.assertEqual("/readyz", c["readinessProbe"]["httpGet"]["path"])
        self.assertIn("limits", c["resources"])
        self.assertIn("requests", c["resources"])
        claim = next(v for v in pod["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"]
        self.assertEqual(k["PersistentVolumeClaim"]["metadata"]["name"], claim)
        svc = k["Service"]
        self.assertEqual("tollgate-cache", svc["metadata"]["name"])
        self.assertEqual([8090], [p["port"] for p in svc["spec"]["ports"]])
        self.assertEqual({}, json.loads(k["ConfigMap"]["data"]["config.json"]))

    def test_redis_replicas_hpa_monitoring_wasmplugin(self):
        docs = render(FULL)
        k = kinds(docs)
        self.assertEqual({"ConfigMap", "Deployment", "Service", "Secret", "HorizontalPodAutoscaler",
                          "PodDisruptionBudget", "ServiceMonitor", "WasmPlugin", "DestinationRule",
                          "EnvoyFilter"}, set(k))
        for doc in docs:
            validate_manifest(self, doc)
        dep = k["Deployment"]["spec"]
        self.assertNotIn("replicas", dep)  # the HPA owns it
        self.assertEqual("RollingUpdate", dep["strategy"]["type"])
        env = {e["name"]: e for e in dep["template"]["spec"]["containers"][0]["env"]}
        self.assertEqual("redis://redis.tollgate:6379/0", env["TOLLGATE_REDIS_URL"]["value"])
        self.assertNotIn("TOLLGATE_DATA_DIR", env)
        ref = env["TOLLGATE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
        self.assertEqual(k["Secret"]["metadata"]["name"], ref["name"])
        self.assertIn(ref["key"], k["Secret"]["data"])
        self.assertEqual({"cache": {"semantic": {"mode": "shadow"}}}, json.loads(k["ConfigMap"]["data"]["config.json"]))
        self.assertEqual("Deployment", k["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["kind"])
        self.assertEqual("/metrics", k["ServiceMonitor"]["spec"]["endpoints"][0]["path"])
        plugin = k["WasmPlugin"]["spec"]
        self.assertEqual("ab" * 32, plugin["sha256"])
        cfg = plugin["pluginConfig"]
        self.assertEqual("outbound|8090||tollgate-cache.tollgate.svc.cluster.local", cfg["cache"]["cluster"])
        self.assertEqual(k["DestinationRule"]["spec"]["host"], cfg["cache"]["authority"])
        self.assertIs(False, cfg["stopOnHeaders"])
        envoy_validate(self, cfg, stop_on_headers=False)

    def test_existing_secrets_and_names(self):
        docs = render({"redis": {"existingSecret": "redis-creds"}, "adminToken": {"existingSecret": "tg-admin"},
                       "wasmPlugin": {"enabled": True}}, namespace="llm", name="edge")
        k = kinds(docs)
        self.assertNotIn("Secret", k)
        for doc in docs:
            validate_manifest(self, doc)
        env = {e["name"]: e for e in k["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
        self.assertEqual({"name": "redis-creds", "key": "redis-url"}, env["TOLLGATE_REDIS_URL"]["valueFrom"]["secretKeyRef"])
        self.assertEqual("tg-admin", env["TOLLGATE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"])
        self.assertEqual("outbound|8090||edge-cache.llm.svc.cluster.local",
                         k["WasmPlugin"]["spec"]["pluginConfig"]["cache"]["cluster"])
        self.assertNotIn("sha256", k["WasmPlugin"]["spec"])

    def test_refuses_what_cannot_work(self):
        for values, message in [
            ({"replicaCount": 2}, "replicaCount > 1 needs redis"),
            ({"autoscaling": {"enabled": True}}, "autoscaling.enabled needs redis"),
            ({"redis": {"url": "redis://r"}, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
             "minReplicas is above"),
        ]:
            with self.subTest(values=values):
                with self.assertRaises(helm.HelmError) as ctx:
                    render(values)
                self.assertIn(message, str(ctx.exception))

    def test_values_schema_enforced(self):
        for values in [{"replicaCont": 1}, {"wasmPlugin": {"sha256": "sha256:abc"}}, {"device": "gpu"}]:
            with self.subTest(values=values), self.assertRaises(helm.HelmError):
                render(values)


if __name__ == "__main__":
    unittest.main()
