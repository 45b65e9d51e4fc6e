"""deploy/grafana/tollgate-dashboard.json and deploy/prometheus/prometheus.yml."""
import json
import unittest

import yaml

from common import ROOT, known_metric_names, prometheus_metric_names

DASHBOARD = ROOT / "deploy" / "grafana" / "tollgate-dashboard.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# The brief's list: every one of these is charted.
REQUIRED = {"tollgate_cost_micro_usd_total", "tollgate_requests_total", "tollgate_tokens_in_total",
            "tollgate_tokens_out_total", "tollgate_cache_requests_total", "tollgate_saved_micro_usd_total",
            "tollgate_rejected_total", "tollgate_admit_seconds", "tollgate_budget_admits_total"}


def panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


class DashboardTest(unittest.TestCase):
    def setUp(self):
        self.dash = json.loads(DASHBOARD.read_text())

    def test_is_a_grafana_dashboard(self):
        d = self.dash
        self.assertIsInstance(d["schemaVersion"], int)
        self.assertGreaterEqual(d["schemaVersion"], 30)
        for key in ("title", "uid", "time", "templating", "panels"):
            self.assertIn(key, d)
        ids = [p["id"] for p in panels(d)]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        charts = [p for p in panels(d) if p["type"] != "row"]
        self.assertGreaterEqual(len(charts), 10)
        for p in charts:
            with self.subTest(panel=p["title"]):
                self.assertIn(p["type"], {"timeseries", "stat", "table", "bargauge", "gauge", "piechart"})
                self.assertTrue(p["targets"], "has targets")
                for t in p["targets"]:
                    self.assertTrue(t["expr"].strip())
                    self.assertTrue(t["refId"])
                    self.assertEqual(t["expr"].count("("), t["expr"].count(")"), t["expr"])
                    self.assertEqual(t["expr"].count("{"), t["expr"].count("}"), t["expr"])
                pos = p["gridPos"]
                self.assertLessEqual(pos["x"] + pos["w"], 24)
        variables = {v["name"] for v in d["templating"]["list"]}
        self.assertEqual({"datasource", "tenant", "model"}, variables)

    def test_metric_names_exist(self):
        used = set()
        for p in panels(self.dash):
            for t in p.get("targets", []):
                used |= prometheus_metric_names(t["expr"])
        for v in self.dash["templating"]["list"]:
            used |= prometheus_metric_names(v.get("definition", ""))
        self.assertLessEqual(REQUIRED, used)
        unknown = used - known_metric_names()
        self.assertEqual(set(), unknown, "metrics neither in the README nor registered by the cache service")

    def test_labels_exist(self):
        # Labels the dashboard groups by are the stats_tags of envoy/tollgate.yaml.tmpl or service labels.
        text = json.dumps(self.dash)
        tmpl = (ROOT / "envoy" / "tollgate.yaml.tmpl").read_text()
        for label in ("tenant", "model", "cache", "reason"):
            self.assertIn(f"tag_name: {label}", tmpl)
            self.assertIn(label, text)
        src = "".join(p.read_text() for p in (ROOT / "cache-service" / "src").rglob("*.rs"))
        for label in ("verdict", "outcome"):
            self.assertIn(f'("{label}"', src)


class PrometheusTest(unittest.TestCase):
    def test_scrape_config(self):
        cfg = yaml.safe_load(PROMETHEUS.read_text())
        jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
        envoy = jobs["tollgate-envoy"]
        self.assertEqual("/stats/prometheus", envoy["metrics_path"])
        self.assertEqual(["envoy:9901"], envoy["static_configs"][0]["targets"])
        service = jobs["tollgate-cache-service"]
        self.assertEqual("/metrics", service["metrics_path"])
        self.assertEqual(["cache-service:8090"], service["static_configs"][0]["targets"])
        compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())["services"]
        for job in jobs.values():
            for target in job["static_configs"][0]["targets"]:
                self.assertIn(target.split(":")[0], compose, "targets are compose service names")


if __name__ == "__main__":
    unittest.main()
