"""deploy/compose/docker-compose.yml and deploy/docker/*.Dockerfile, checked without a Docker engine."""
import json
import pathlib
import re
import shlex
import subprocess
import tempfile
import unittest

import yaml

from common import ROOT, jsonschema, run_envoy_validate, which

COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
# What the README promises for `make demo`: Envoy 10000 (admin 9901), cache service 8090, provider 8081.
PROMISED = {"envoy": {10000, 9901}, "cache-service": {8090}, "sim-provider": {8081}}
COMPOSE_SPEC = pathlib.Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")  # Debian docker-compose


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def published(port_spec):
    """(host_ip, host_port, container_port) of a short-syntax port mapping."""
    parts = str(port_spec).split(":")
    if len(parts) == 3:
        return parts[0], int(parts[1]), int(parts[2])
    if len(parts) == 2:
        return "", int(parts[0]), int(parts[1])
    return "", None, int(parts[0])


def dockerfile_instructions(path):
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


class ComposeTest(unittest.TestCase):
    def test_services_and_ports(self):
        services = compose()["services"]
        self.assertEqual({"envoy", "cache-service", "redis", "sim-provider"}, set(services))
        for name, ports in PROMISED.items():
            got = {published(p) for p in services[name].get("ports", [])}
            self.assertEqual(ports, {h for _, h, _ in got}, name)
            for ip, host, container in got:
                self.assertEqual(host, container, f"{name}: same port inside and out")
                self.assertEqual("127.0.0.1", ip, f"{name}: bound to loopback, as the demo")
        self.assertNotIn("ports", services["redis"])

    def test_volumes(self):
        doc = compose()
        self.assertEqual({"cache-data", "redis-data"}, set(doc["volumes"]))
        services = doc["services"]
        self.assertIn("cache-data:/var/lib/tollgate", services["cache-service"]["volumes"])
        self.assertIn("redis-data:/data", services["redis"]["volumes"])
        self.assertEqual("/var/lib/tollgate", services["cache-service"]["environment"]["TOLLGATE_DATA_DIR"])

    def test_dependencies_and_healthchecks(self):
        services = compose()["services"]
        for name, svc in services.items():
            test = svc.get("healthcheck", {}).get("test")
            self.assertTrue(test, f"{name} has a healthcheck")
        self.assertIn("/readyz", " ".join(services["cache-service"]["healthcheck"]["test"]))
        self.assertIn("/ready", " ".join(services["envoy"]["healthcheck"]["test"]))
        self.assertEqual({"cache-service": {"condition": "service_healthy"},
                          "sim-provider": {"condition": "service_healthy"}}, services["envoy"]["depends_on"])
        self.assertEqual({"redis": {"condition": "service_healthy"}}, services["cache-service"]["depends_on"])
        env = services["cache-service"]["environment"]
        self.assertEqual("0.0.0.0:8090", env["TOLLGATE_LISTEN"])
        self.assertEqual("redis://redis:6379/0", env["TOLLGATE_REDIS_URL"])
        self.assertIn("TOLLGATE_ADMIN_TOKEN", env)
        self.assertIn("--appendonly", services["redis"]["command"])

    def test_dockerfiles_and_copy_sources(self):
        services = compose()["services"]
        built = {name: svc["build"] for name, svc in services.items() if "build" in svc}
        self.assertEqual({"envoy", "cache-service", "sim-provider"}, set(built))
        dockerfiles = {ROOT / "deploy" / "docker" / "filter.Dockerfile"}
        for name, build in built.items():
            context = (COMPOSE.parent / build["context"]).resolve()
            self.assertEqual(ROOT, context, name)
            dockerfiles.add(context / build["dockerfile"])
        for path in sorted(dockerfiles):
            with self.subTest(dockerfile=path.name):
                self.assertTrue(path.exists(), path)
                ignore = path.with_name(path.name + ".dockerignore").read_text().split()
                self.assertIn("target", ignore)  # keep the multi-GB build dir out of the context
                stages = set()
                instructions = list(dockerfile_instructions(path))
                self.assertEqual("FROM", next(w for w, _ in instructions if w not in ("ARG",)))
                for word, rest in instructions:
                    if word == "FROM":
                        m = re.search(r"\bAS\s+(\S+)", rest, re.I)
                        if m:
                            stages.add(m.group(1))
                    if word == "COPY":
                        args = shlex.split(rest)
                        from_stage = next((a.split("=", 1)[1] for a in args if a.startswith("--from=")), None)
                        paths = [a for a in args if not a.startswith("--")]
                        if from_stage:
                            self.assertIn(from_stage, stages, f"COPY --from={from_stage}")
                            continue
                        for src in paths[:-1]:
                            self.assertTrue((ROOT / src).exists(), f"{path.name}: COPY source {src} missing")
                # Every workspace member is copied (cargo needs them all to load the workspace).
                members = re.search(r"members\s*=\s*\[(.*?)\]", (ROOT / "Cargo.toml").read_text(), re.S).group(1)
                top = {m.strip().strip('"').split("/")[0] for m in members.split(",") if m.strip()}
                copied = {shlex.split(r)[0] for w, r in instructions if w == "COPY" and "--from" not in r}
                if "Cargo.toml" in copied:
                    self.assertLessEqual(top, copied, path.name)

    def test_envoy_image_config_is_valid(self):
        """The Envoy config the envoy image bakes (render-envoy.sh) loads in the real Envoy with the filter."""
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp, "envoy.yaml")
            subprocess.run(["bash", str(ROOT / "deploy" / "docker" / "render-envoy.sh"), str(out),
                            str(ROOT / "target" / "wasm32-wasip1" / "release" / "tollgate_filter.wasm")], check=True)
            cfg = yaml.safe_load(out.read_text())
            clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
            addr = lambda c: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            self.assertEqual({"address": "cache-service", "port_value": 8090}, addr(clusters["tollgate_cache"]))
            self.assertEqual({"address": "sim-provider", "port_value": 8081}, addr(clusters["openai"]))
            self.assertTrue(all(c["type"] == "STRICT_DNS" for c in clusters.values()))
            self.assertEqual(10000, cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"])
            self.assertEqual("0.0.0.0", cfg["admin"]["address"]["socket_address"]["address"])
            run_envoy_validate(self, out)

    @unittest.skipIf(jsonschema is None or not COMPOSE_SPEC.exists(),
                     "compose spec schema not present (apt-get install --no-install-recommends docker-compose)")
    def test_compose_spec_schema(self):
        schema = json.loads(COMPOSE_SPEC.read_text())
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in jsonschema.Draft201909Validator(schema).iter_errors(compose())]
        self.assertEqual([], errors)

    @unittest.skipIf(not which("docker-compose"), "docker-compose not installed")
    def test_docker_compose_config(self):
        r = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(0, r.returncode, r.stderr)


if __name__ == "__main__":
    unittest.main()
