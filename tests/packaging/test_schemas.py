"""schemas/*.schema.json (JSON Schema 2020-12): every shipped config validates, broken configs are
refused, and the schemas stay in step with the Rust Raw* structs they describe (field names from
the struct bodies, serde renames/flatten, required fields, Option -> null, deny_unknown_fields ->
additionalProperties false, enum variants)."""
import copy
import json
import re
import unittest

import yaml

from common import ROOT, jsonschema, needs_jsonschema

SCHEMAS = ROOT / "schemas"
README = ROOT / "README.md"


def load_schema(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def errors(schema, instance):
    """Validation errors as `path: message`, descending into anyOf/oneOf alternatives (leaf
    messages; the `null` branch of optional fields left out) so failures say what is wrong."""
    def leaves(e):
        if not e.context:
            return [e]
        inner = [leaf for c in e.context for leaf in leaves(c) if "is not of type 'null'" not in leaf.message]
        return inner or [e]
    v = jsonschema.Draft202012Validator(schema)
    return sorted({f"{'/'.join(map(str, leaf.absolute_path))}: {leaf.message}"
                   for e in v.iter_errors(instance) for leaf in leaves(e)})


# ------------------------------------------------------------------ README helpers

def strip_jsonc(text):
    """Removes // and /* */ comments outside JSON strings (URLs and regexes in strings survive)."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
        elif c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def readme_json_blocks():
    """(line, parsed) for each ```json / ```jsonc block that is valid JSON once comments are gone."""
    text = README.read_text()
    blocks = []
    for m in re.finditer(r"^```(jsonc?)[ \t]*\n(.*?)^```", text, re.M | re.S):
        line = text.count("\n", 0, m.start()) + 1
        try:
            blocks.append((line, json.loads(strip_jsonc(m.group(2)))))
        except json.JSONDecodeError:
            continue
    return blocks


FILTER_ONLY_CACHE = {"cluster", "authority", "timeoutMs", "settleBatch", "settleQueue", "maxQueryChars"}
FILTER_ONLY_BUDGETS = {"failureMode", "defaultMaxOutputTokens"}


def is_service_config(doc):
    """The service file has only `cache`, `budgets` and `complexity`, with keys the filter's sections lack."""
    if not isinstance(doc, dict) or not doc or not set(doc) <= {"cache", "budgets", "complexity"}:
        return False
    cache, budgets = doc.get("cache") or {}, doc.get("budgets") or {}
    return not (set(cache) & FILTER_ONLY_CACHE or set(budgets) & FILTER_ONLY_BUDGETS)


def readme_budget_bodies():
    """Bodies of the README's `PUT /v1/budgets/<id>` examples, with the id the path gives them."""
    out = []
    for m in re.finditer(r"/v1/budgets/([A-Za-z0-9_.:-]+)\s[^\n]*\\\n\s*-d '(\{.*?\})'", README.read_text()):
        body = json.loads(m.group(2))
        body.setdefault("id", m.group(1))
        out.append(body)
    return out


# ------------------------------------------------------------------ Rust parsing

def camel(name):
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def rust_structs(path):
    """struct name -> {"attrs": container serde attrs, "fields": [(name, type, serde attrs)]}."""
    text = (ROOT / path).read_text()
    structs = {}
    for m in re.finditer(r"((?:^#\[[^\n]*\]\n)*)^pub struct (\w+) \{\n(.*?)^\}", text, re.M | re.S):
        attrs, name, body = m.group(1), m.group(2), m.group(3)
        fields, pending = [], []
        for line in body.splitlines():
            s = line.strip()
            if s.startswith("#[serde("):
                pending.append(s)
            elif (f := re.match(r"pub (\w+): (.+),$", s)):
                fields.append((f.group(1), f.group(2), " ".join(pending)))
                pending = []
            elif s and not s.startswith("///") and not s.startswith("#["):
                pending = []
        structs[name] = {"attrs": attrs, "fields": fields}
    return structs


def rust_enum_variants(path, name):
    text = (ROOT / path).read_text()
    m = re.search(r"((?:^#\[[^\n]*\]\n)*)^pub enum " + name + r" \{\n(.*?)^\}", text, re.M | re.S)
    attrs, body = m.group(1), m.group(2)
    variants = re.findall(r"^\s*([A-Z]\w*),", body, re.M)
    rule = re.search(r'rename_all = "(\w+)"', attrs).group(1)
    conv = {"lowercase": str.lower,
            "snake_case": lambda v: re.sub(r"(?<!^)([A-Z])", r"_\1", v).lower()}[rule]
    return {conv(v) for v in variants}


def json_fields(structs, name):
    """The JSON field names of a struct, serde rules applied: rename_all, rename, flatten.
    Returns (names, required, nullable) sets."""
    st = structs[name]
    camel_case = 'rename_all = "camelCase"' in st["attrs"]
    names, required, nullable = set(), set(), set()
    for field, ty, attrs in st["fields"]:
        if "flatten" in attrs:
            inner = re.match(r"(\w+)", ty).group(1)
            n, r, o = json_fields(structs, inner)
            names |= n
            required |= r
            nullable |= o
            continue
        rename = re.search(r'rename = "([^"]+)"', attrs)
        key = rename.group(1) if rename else (camel(field) if camel_case else field)
        names.add(key)
        if ty.startswith("Option<"):
            nullable.add(key)
        elif "default" not in attrs and "default" not in st["attrs"]:
            required.add(key)
    return names, required, nullable


def resolve(root, node):
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def at(root, pointer):
    """Subschema at a path of property names / `$defs/<name>` (through $ref and Option anyOf)."""
    node = root
    for part in pointer:
        if part.startswith("$defs/"):
            node = root["$defs"][part[6:]]
            continue
        node = node["properties"][part]
        if "anyOf" in node and "properties" not in node:
            node = next(s for s in node["anyOf"] if s.get("type") != "null")
        node = resolve(root, node)
    return node


def accepts_null(node):
    t = node.get("type")
    if t == "null" or (isinstance(t, list) and "null" in t):
        return True
    return any(s.get("type") == "null" for s in node.get("anyOf", []))


FILTER_STRUCTS = {
    "RawConfig": (), "RawTenant": ("tenant",), "RawLimits": ("limits",), "RawMaxTokens": ("maxTokens",),
    "RawMaxTokensRule": ("$defs/maxTokensRule",), "RawPricing": ("pricing",),
    "RawModelPrice": ("$defs/modelPrice",), "RawTokenizer": ("tokenizer",), "RawMetrics": ("metrics",),
    "RawCache": ("cache",), "RawBudgets": ("budgets",), "RawTrimming": ("trimming",),
    "RawPrefixHints": ("prefixHints",), "RawRouting": ("$defs/routing",), "RawRule": ("$defs/rule",),
    "RawMatch": ("$defs/match",), "RawTarget": ("$defs/target",), "RawCascade": ("$defs/cascade",),
}
FILTER_SOURCES = ("filter/core/src/config.rs", "filter/core/src/routing.rs", "filter/core/src/pricing.rs")
SERVICE_STRUCTS = {
    "FileConfig": (), "RawCacheConfig": ("cache",), "RawSemantic": ("cache", "semantic"),
    "RawRule": ("$defs/cacheRule",), "RawBudgetsConfig": ("budgets",), "BreakerConfig": ("$defs/breaker",),
    "AnomalyConfig": ("$defs/anomaly",), "ComplexityConfig": ("complexity",),
}
SERVICE_SOURCES = ("cache-service/src/service.rs", "cache-service/src/rules.rs", "cache-service/src/breaker.rs",
                   "cache-service/src/complexity.rs")


@needs_jsonschema
class SchemaParityTest(unittest.TestCase):
    """The schemas describe exactly what serde accepts."""

    def check(self, schema_name, sources, mapping):
        schema = load_schema(schema_name)
        structs = {}
        for src in sources:
            structs.update(rust_structs(src))
        for struct, pointer in mapping.items():
            with self.subTest(struct=struct):
                names, required, nullable = json_fields(structs, struct)
                node = at(schema, pointer)
                self.assertEqual(names, set(node["properties"]), f"{struct} fields vs schema properties")
                self.assertEqual(required, set(node.get("required", [])), f"{struct} required fields")
                self.assertEqual(nullable, {k for k, v in node["properties"].items() if accepts_null(v)},
                                 f"{struct}: Option fields (and only they) accept null")
                denies = "deny_unknown_fields" in structs[struct]["attrs"]
                self.assertEqual(denies, node.get("additionalProperties") is False,
                                 f"{struct}: deny_unknown_fields <-> additionalProperties false")

    def test_filter_structs(self):
        structs = {}
        for src in FILTER_SOURCES:
            structs.update(rust_structs(src))
        # Every Raw* struct of the filter is covered.
        self.assertEqual({s for s in structs if s.startswith("Raw")}, set(FILTER_STRUCTS))
        self.check("filter-config", FILTER_SOURCES, FILTER_STRUCTS)

    def test_service_structs(self):
        self.check("service-config", SERVICE_SOURCES, SERVICE_STRUCTS)

    def test_budget_struct(self):
        self.check("budget", ("cache-service/src/budget/def.rs",), {"BudgetDef": ()})

    def test_enums(self):
        service, budget = load_schema("service-config"), load_schema("budget")
        cases = [
            (at(service, ("cache", "semantic"))["properties"]["mode"], "cache-service/src/engine.rs", "SemanticMode"),
            (service["$defs"]["breaker"]["properties"]["action"], "cache-service/src/breaker.rs", "BreakerAction"),
            (budget["properties"]["scope"], "cache-service/src/budget/def.rs", "ScopeKind"),
            (budget["properties"]["period"], "cache-service/src/budget/def.rs", "Period"),
        ]
        for node, src, enum in cases:
            with self.subTest(enum=enum):
                self.assertEqual(rust_enum_variants(src, enum), set(node["enum"]))
        tok = load_schema("filter-config")["properties"]["tokenizer"]["properties"]["models"]
        bpe = (ROOT / "filter" / "bpe" / "src" / "lib.rs").read_text()
        names = set(re.findall(r'"(\w+)" => Some\(Encoding::', bpe))
        self.assertEqual(names, set(tok["additionalProperties"]["enum"]))

    def test_doc_comments_become_descriptions(self):
        """A sample of Rust doc comments, copied into the schema."""
        f, s, b = load_schema("filter-config"), load_schema("service-config"), load_schema("budget")
        self.assertIn("Default 100 ms", f["properties"]["cache"]["properties"]["timeoutMs"]["description"])
        self.assertIn("Hour (UTC, 0-23)", b["properties"]["resetHourUtc"]["description"])
        self.assertIn("Sliding window length", s["$defs"]["breaker"]["properties"]["windowSeconds"]["description"])


@needs_jsonschema
class ShippedConfigsTest(unittest.TestCase):
    def test_schemas_are_valid_2020_12(self):
        for name in ("filter-config", "service-config", "budget"):
            schema = load_schema(name)
            self.assertEqual("https://json-schema.org/draft/2020-12/schema", schema["$schema"])
            jsonschema.Draft202012Validator.check_schema(schema)

    def test_demo_config(self):
        for name in ("demo-config.json", "pool-config.json"):
            doc = json.loads((ROOT / "envoy" / name).read_text())
            self.assertEqual([], errors(load_schema("filter-config"), doc), name)

    def test_istio_plugin_config(self):
        docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "istio" / "wasmplugin.yaml").read_text()) if d]
        plugin = next(d for d in docs if d.get("kind") == "WasmPlugin")
        self.assertEqual([], errors(load_schema("filter-config"), plugin["spec"]["pluginConfig"]))

    def test_helm_values(self):
        values = yaml.safe_load((ROOT / "deploy" / "helm" / "tollgate" / "values.yaml").read_text())
        self.assertEqual([], errors(load_schema("service-config"), values.get("config") or {}))
        wp = values.get("wasmPlugin") or {}
        if "config" in wp:
            # As templates/wasmplugin.yaml renders it: cache.cluster/authority and stopOnHeaders set.
            cfg = copy.deepcopy(wp["config"] or {})
            cfg.setdefault("cache", {}).update(
                {"cluster": "outbound|8090||tollgate-cache.tollgate.svc.cluster.local",
                 "authority": "tollgate-cache.tollgate.svc.cluster.local"})
            cfg["stopOnHeaders"] = False
            self.assertEqual([], errors(load_schema("filter-config"), cfg))

    def test_readme_examples(self):
        blocks = readme_json_blocks()
        kinds = []
        for line, doc in blocks:
            kind = "service-config" if is_service_config(doc) else "filter-config"
            kinds.append(kind)
            with self.subTest(readme_line=line, schema=kind):
                self.assertEqual([], errors(load_schema(kind), doc))
        self.assertIn("filter-config", kinds)
        self.assertIn("service-config", kinds)
        bodies = readme_budget_bodies()
        self.assertGreaterEqual(len(bodies), 1)
        for body in bodies:
            with self.subTest(budget=body["id"]):
                self.assertEqual([], errors(load_schema("budget"), body))

    def test_strip_jsonc_keeps_strings(self):
        text = '{"u": "http://x//y", "r": "a\\"//b", // gone\n "n": 1 /* gone */}'
        self.assertEqual({"u": "http://x//y", "r": 'a"//b', "n": 1}, json.loads(strip_jsonc(text)))


FILTER_INVALID = [
    {"bogus": 1},
    {"cache": {"clusterr": "c"}},
    {"cache": {"authority": "a"}},
    {"cache": {"cluster": " "}},
    {"cache": {"cluster": "c", "timeoutMs": 0}},
    {"cache": {"cluster": "c", "timeoutMs": "100"}},
    {"budgets": {}},
    {"cache": {"cluster": "c"}, "budgets": {"failureMode": "maybe"}},
    {"tenant": {"sources": ["cookie:x"]}},
    {"tenant": {"sources": ["header:bad header"]}},
    {"tenant": {"userSources": ["cookie:x"]}},
    {"tenant": {"default": "has space"}},
    {"tenant": {"org": "a b"}},
    {"tenant": None},
    {"limits": {"maxRequestBytes": 0}},
    {"maxTokens": {"default": 0}},
    {"maxTokens": {"cap": -5}},
    {"maxTokens": {"models": {"a*b": {"cap": 1}}}},
    {"maxTokens": {"models": {"m": {"cap": 1, "floor": 1}}}},
    {"pricing": {"builtin": "yes"}},
    {"pricing": {"models": {"m": {"inputPerMillion": 1}}}},
    {"pricing": {"models": {"m": {"inputPerMillion": 1, "outputPerMillion": 1, "input_cost_per_token": 1e-6}}}},
    {"pricing": {"models": {"m": {"input_per_million": 1, "outputPerMillion": 1}}}},
    {"tokenizer": {"models": {"m": "p50k"}}},
    {"tokenizer": {"anthropicRatio": 9}},
    {"metrics": {"flushIntervalMs": 60001}},
    {"stopOnHeaders": "true"},
    {"routing": {"rules": [{"model": "m"}]}},
    {"routing": {"rules": [{"name": "r"}]}},
    {"routing": {"rules": [{"name": "r", "model": "m", "when": {}}]}},
    {"routing": {"rules": [{"name": "r", "model": "m", "match": {"routePrefix": "v1"}}]}},
    {"routing": {"rules": [{"name": "r", "model": "m", "match": {"complexityBelow": 1.5}}]}},
    {"routing": {"rules": [{"name": "r", "model": "m", "fallbackOn": ["429"]}]}},
    {"routing": {"rules": [{"name": "r", "fallbacks": [{"model": "a"}], "fallbackOn": ["4xx"]}]}},
    {"routing": {"rules": [{"name": "r", "cascade": {"strong": {"model": "a"}, "checks": ["slow"]}}]}},
    {"routing": {"rules": [{"name": "r", "cascade": {"checks": ["empty"]}}]}},
    {"routing": {"rules": [{"name": "r", "fallbacks": [{}]}]}},
    {"routing": {"rules": [{"name": "r", "cluster": "bad cluster"}]}},
    {"routing": {"routeHeader": "X-Route"}},
    {"routing": {"expectedOutputTokens": 0}},
    {"trimming": {"maxInputTokens": 0}},
    {"prefixHints": {"blockTokens": 8}},
]
SERVICE_INVALID = [
    {"bogus": {}},
    {"cache": {"semantic": {"mode": "always"}}},
    {"cache": {"semantic": {"threshold": 1.5}}},
    {"cache": {"semantic": {"topK": 0}}},
    {"cache": {"semantic": {"mode": "serve", "k": 5}}},
    {"cache": {"maxEntries": 0}},
    {"cache": {"maxEntries": "many"}},
    {"cache": {"defaultTtl": 60}},
    {"cache": {"maxTemperature": -1}},
    {"cache": {"allowTools": "no"}},
    {"cache": {"rules": [{"routes": ["/v1"]}]}},
    {"cache": {"rules": [{"name": "x", "ttl": 5}]}},
    {"cache": {"semantic": None}},
    {"budgets": {"reservationTtl": 600}},
    {"budgets": {"breaker": {"windowSeconds": 60}}},
    {"budgets": {"breaker": {"maxUsd": 0}}},
    {"budgets": {"breaker": {"maxUsd": 1, "action": "throttle"}}},
    {"budgets": {"breaker": {"maxUsd": 1, "action": "downgrade"}}},
    {"budgets": {"breaker": {"maxUsd": 1, "windowSeconds": 86401}}},
    {"budgets": {"breaker": {"maxUsd": 1, "windw": 1}}},
    {"budgets": {"anomaly": {"factor": 1}}},
    {"budgets": {"anomaly": {"trailingDays": 91}}},
]
BUDGET_OK = {"id": "search-daily", "scope": "team", "target": "search", "period": "day", "limitUsd": 10}
BUDGET_INVALID = [
    {k: v for k, v in BUDGET_OK.items() if k != "id"},
    {**BUDGET_OK, "id": "has space"},
    {**BUDGET_OK, "scope": "tenant"},
    {**BUDGET_OK, "period": "week"},
    {**BUDGET_OK, "limitUsd": "10"},
    {**BUDGET_OK, "limitUsd": -1},
    {**BUDGET_OK, "limitUsd": 1e7},
    {k: v for k, v in BUDGET_OK.items() if k != "limitUsd"},
    {**BUDGET_OK, "softFraction": 0.8},
    {**BUDGET_OK, "downgradeTo": "gpt-4o-mini"},
    {**BUDGET_OK, "softFraction": 1.5, "downgradeTo": "gpt-4o-mini"},
    {**BUDGET_OK, "resetHourUtc": 24},
    {**BUDGET_OK, "period": "hour", "resetHourUtc": 3},
    {**BUDGET_OK, "resetDayOfMonth": 2},
    {**BUDGET_OK, "period": "month", "resetDayOfMonth": 29},
    {**BUDGET_OK, "limit_usd": 10},
]


@needs_jsonschema
class InvalidConfigsTest(unittest.TestCase):
    def check(self, name, cases):
        schema = load_schema(name)
        for case in cases:
            with self.subTest(config=json.dumps(case)):
                self.assertNotEqual([], errors(schema, case), "should be refused")

    def test_filter(self):
        self.check("filter-config", FILTER_INVALID)

    def test_service(self):
        self.check("service-config", SERVICE_INVALID)

    def test_budget(self):
        self.check("budget", BUDGET_INVALID)

    def test_valid_edge_cases(self):
        """Accepted by serde too: nulls for Option fields, empty configs, the month budget."""
        f, s, b = load_schema("filter-config"), load_schema("service-config"), load_schema("budget")
        for doc in ({}, {"maxTokens": {"default": None, "cap": None}, "cache": None, "routing": None},
                    {"cache": {"cluster": "c", "authority": None}, "budgets": {"failureMode": "closed"}},
                    {"routing": {"rules": [{"name": "r", "cascade": {"strong": {"model": "gpt-4o"}}}]}},
                    {"pricing": {"models": {"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                                                   "litellm_provider": "openai", "mode": "chat"}}}}):
            self.assertEqual([], errors(f, doc))
        for doc in ({}, {"cache": {"bypassPatterns": None}, "budgets": {"breaker": None}},
                    {"budgets": {"breaker": {"maxUsd": 5, "action": "downgrade", "downgradeTo": "m"}}}):
            self.assertEqual([], errors(s, doc))
        self.assertEqual([], errors(b, {**BUDGET_OK, "period": "month", "resetDayOfMonth": 28, "resetHourUtc": 6,
                                        "limitUsd": None, "limitTokens": 5, "softFraction": 0.8,
                                        "downgradeTo": "gpt-4o-mini"}))


if __name__ == "__main__":
    unittest.main()
