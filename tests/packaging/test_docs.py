"""README.md's configuration reference is generated from schemas/*.schema.json
(scripts/gen_config_reference.py, `make docs`): it must be current, and the schemas must carry
what the reference shows (a description for every field, defaults the schema itself accepts)."""
import importlib.util
import json
import unittest

from common import ROOT, jsonschema, needs_jsonschema

SCHEMAS = ("filter-config", "service-config", "budget")


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "scripts" / "gen_config_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def properties(schema):
    """(pointer, property schema) for every property in the schema, $defs included."""
    out = []

    def walk(node, ptr):
        if isinstance(node, dict):
            for key, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict):
                    out.append((f"{ptr}/properties/{key}", sub))
            for key, sub in node.items():
                walk(sub, f"{ptr}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{ptr}/{i}")

    walk(schema, "#")
    return out


def is_field(ptr):
    """A real field, not a property named inside a conditional (`then`, `anyOf` …) branch."""
    parts = ptr.split("/")
    return not ({"if", "then", "else", "anyOf", "allOf", "oneOf", "not", "dependentSchemas"} & set(parts))


class ConfigReferenceTest(unittest.TestCase):
    def test_readme_block_is_generated_output(self):
        gen = load_generator()
        current = gen.current_block((ROOT / "README.md").read_text())
        self.assertIsNotNone(current, "README.md lacks the generated-reference marker comments")
        self.assertEqual(gen.render(), current,
                         "README.md's configuration reference differs from the schemas: run `make docs`")

    def test_every_field_has_a_description(self):
        for name in SCHEMAS:
            schema = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
            for ptr, node in properties(schema):
                if not is_field(ptr):
                    continue
                with self.subTest(schema=name, field=ptr):
                    has = bool(node.get("description"))
                    if not has and "$ref" in node:
                        target = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
                        has = bool(target.get("description"))
                    self.assertTrue(has, "no description: the generated reference would have an empty cell")

    @unittest.skipIf(jsonschema is None, "jsonschema not installed (tests/packaging/requirements.txt)")
    def test_defaults_are_valid_values(self):
        for name in SCHEMAS:
            schema = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
            n = 0
            for ptr, node in properties(schema):
                if "default" not in node:
                    continue
                n += 1
                with self.subTest(schema=name, field=ptr):
                    sub = {**node, "$defs": schema.get("$defs", {})}
                    errors = [e.message for e in jsonschema.Draft202012Validator(sub).iter_errors(node["default"])]
                    self.assertEqual([], errors)
            self.assertGreater(n, 0, f"{name}: no defaults at all")

    def test_not_supported_notes_match_the_filter(self):
        """The schema says fallbacks/cascade are refused exactly while the filter's config compile
        step refuses them (whoever lands them drops the note and runs `make docs`)."""
        refuses = "not supported by this version of the filter yet" in \
            (ROOT / "filter" / "core" / "src" / "config.rs").read_text()
        schema = json.loads((ROOT / "schemas" / "filter-config.schema.json").read_text())
        notes = [ptr for ptr, node in properties(schema) if "Not supported by this version" in node.get("description", "")]
        if refuses:
            self.assertTrue(notes, "the filter refuses fallbacks/cascade but the schema does not say so")
        else:
            self.assertEqual([], notes, "the filter accepts fallbacks/cascade now: drop the note from the schema")

    def test_renders_maps_arrays_and_refs(self):
        text = load_generator().render()
        for row in ("`maxTokens.models.<name>.cap`", "`routing.rules[].match.complexityBelow`",
                    "`routing.rules[].cascade.strong.model`", "`cache.rules[].ttlSeconds`",
                    "`budgets.breaker.maxUsd` | number | required", "`cache.semantic.match` | string | `\"repeats\"`"):
            self.assertIn(row, text)

    def test_check_mode_detects_drift(self):
        import tempfile
        import pathlib
        gen = load_generator()
        with tempfile.TemporaryDirectory() as tmp:
            readme = pathlib.Path(tmp, "README.md")
            readme.write_text(f"intro\n{gen.BEGIN}\nstale\n{gen.END}\noutro\n")
            self.assertEqual(1, gen.main(["--check", "--readme", str(readme)]))
            self.assertEqual(0, gen.main(["--readme", str(readme)]))
            self.assertEqual(0, gen.main(["--check", "--readme", str(readme)]))
            text = readme.read_text()
            self.assertTrue(text.startswith("intro\n") and text.endswith("\noutro\n"))


class ArchitectureSvgTest(unittest.TestCase):
    def test_svg_is_generated_well_formed_and_names_the_parts(self):
        import xml.etree.ElementTree as ET
        spec = importlib.util.spec_from_file_location("architecture", ROOT / "docs" / "architecture.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        svg = (ROOT / "docs" / "architecture.svg").read_text()
        self.assertEqual(mod.build(), svg, "docs/architecture.svg differs from docs/architecture.py: run `make docs`")
        root = ET.fromstring(svg)
        self.assertEqual("{http://www.w3.org/2000/svg}svg", root.tag)
        self.assertNotIn("<script", svg)
        self.assertNotIn("href=", svg)  # self-contained
        words = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
        for part in ("Envoy", "Tollgate Wasm filter", "tokenize", "price", "govern", "admit call-out",
                     "hit → local reply", "settle (batched)", "POST /v1/admit", "POST /v1/settle",
                     "OpenAI API", "Anthropic API", "Self-hosted pool", "ONNX embedder", "ANN index", "budgets",
                     "spend ledger", "prefix tracker", "cost dashboard", "GET /metrics", "embedded redb",
                     "Redis (shared)", "Prometheus", "Grafana", "OpenAI SDK", "Anthropic SDK"):
            self.assertIn(part, words)


if __name__ == "__main__":
    unittest.main()
