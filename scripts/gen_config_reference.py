#!/usr/bin/env python3
"""Renders the README's configuration reference from the JSON Schemas in schemas/.

    scripts/gen_config_reference.py            rewrite the generated block of README.md in place
    scripts/gen_config_reference.py --check    exit 1 if README.md's block is not what this renders
    scripts/gen_config_reference.py --stdout   print the block

The block sits between the BEGIN/END marker comments below; everything outside them is left
alone. Each schema becomes tables of (key, type, default, allowed values, description): nested
objects flattened to dotted paths, map values as `<name>`, array items as `[]`, `$ref`s followed,
`X | null` shown as optional. Edit the schemas (descriptions, `default`), then `make docs`.
Standard library only.
"""
import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SCHEMAS = ROOT / "schemas"
BEGIN = "<!-- BEGIN GENERATED CONFIG REFERENCE: scripts/gen_config_reference.py from schemas/*.schema.json; edit those, then `make docs` -->"
END = "<!-- END GENERATED CONFIG REFERENCE -->"

# (schema file, heading); each schema's own description introduces its tables.
DOCUMENTS = [
    ("filter-config", "Filter policy"),
    ("service-config", "Cache service configuration file"),
    ("budget", "Budget definitions"),
]

# Integer bounds that only restate the Rust type (u32/u64) carry no information for a reader.
TYPE_BOUND = 2**31


def load(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def code(value):
    """Inline code, safe inside a Markdown table cell."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("|", "\\|")
    tick = "``" if "`" in text else "`"
    pad = " " if tick == "``" else ""
    return f"{tick}{pad}{text}{pad}{tick}"


def cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


class Walker:
    def __init__(self, root):
        self.root = root

    def resolve(self, node):
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/$defs/"):
                raise ValueError(f"unsupported $ref {ref}")
            merged = dict(self.root["$defs"][ref.rsplit("/", 1)[1]])
            # Keywords next to the $ref (a description) win over the target's.
            merged.update({k: v for k, v in node.items() if k != "$ref"})
            node = merged
            seen += 1
            if seen > 20:
                raise ValueError(f"$ref loop at {ref}")
        return node

    def unwrap(self, node):
        """(schema, nullable): `anyOf: [X, {type: null}]` and `type: [T, "null"]` as X / T + flag."""
        node = self.resolve(node)
        nullable = False
        alts = node.get("anyOf")
        if alts and any(a.get("type") == "null" for a in alts):
            rest = [a for a in alts if a.get("type") != "null"]
            if len(rest) == 1:
                inner = self.resolve(rest[0])
                outer = {k: v for k, v in node.items() if k != "anyOf"}
                node = {**inner, **outer}
                nullable = True
        t = node.get("type")
        if isinstance(t, list) and "null" in t:
            nullable = True
        return node, nullable

    def type_name(self, node):
        node = self.resolve(node)
        if "enum" in node:
            kinds = sorted({type(v).__name__ for v in node["enum"]})
            return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(kinds[0], "enum") \
                if len(kinds) == 1 else "enum"
        if "const" in node:
            return "const"
        t = node.get("type")
        types = [x for x in (t if isinstance(t, list) else [t]) if x and x != "null"]
        if not types:
            if "anyOf" in node or "oneOf" in node:
                alts = [self.type_name(a) for a in node.get("anyOf", node.get("oneOf", [])) if a.get("type") != "null"]
                return " or ".join(dict.fromkeys(alts))
            return "any"
        out = []
        for ty in types:
            if ty == "array":
                items, _ = self.unwrap(node.get("items", {}))
                out.append(f"array of {self.type_name(items)}" if items else "array")
            elif ty == "object" and isinstance(node.get("additionalProperties"), dict) and "properties" not in node:
                value, _ = self.unwrap(node["additionalProperties"])
                out.append(f"map of {self.type_name(value)}" if "properties" not in value else "map of object")
            else:
                out.append(ty)
        return " or ".join(out)

    def allowed(self, node):
        node = self.resolve(node)
        parts = []
        if "enum" in node:
            parts.append(" \\| ".join(code(v) for v in node["enum"]))
        if "const" in node:
            parts.append(code(node["const"]))
        lo, hi = node.get("minimum"), node.get("maximum")
        xlo, xhi = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
        if hi is not None and hi >= TYPE_BOUND:
            hi = None
        if xhi is not None and xhi >= TYPE_BOUND:
            xhi = None
        if lo is not None and hi is not None:
            parts.append(f"{num(lo)}–{num(hi)}")
        else:
            low = f"≥ {num(lo)}" if lo is not None else f"> {num(xlo)}" if xlo is not None else None
            high = f"≤ {num(hi)}" if hi is not None else f"< {num(xhi)}" if xhi is not None else None
            bounds = [b for b in (low, high) if b]
            if bounds:
                parts.append(" and ".join(bounds))
        if "pattern" in node:
            pat = node["pattern"]
            parts.append("non-blank" if pat == "\\S" else f"matches {code(pat)}")
        if "minLength" in node and node["minLength"] > 1:
            parts.append(f"length ≥ {node['minLength']}")
        if node.get("format") == "regex":
            parts.append("a regex")
        if "minItems" in node:
            parts.append(f"≥ {node['minItems']} item{'s' if node['minItems'] != 1 else ''}")
        if "maxItems" in node:
            parts.append(f"≤ {node['maxItems']} items")
        items = node.get("items")
        if isinstance(items, dict):
            inner, _ = self.unwrap(items)
            if "properties" not in inner:
                sub = self.allowed(inner)
                if sub:
                    parts.append(f"each: {sub}")
        names = node.get("propertyNames")
        if isinstance(names, dict) and "pattern" in names:
            parts.append(f"keys match {code(names['pattern'])}")
        ap = node.get("additionalProperties")
        if isinstance(ap, dict) and "properties" not in node:
            inner, _ = self.unwrap(ap)
            if "properties" not in inner:
                sub = self.allowed(inner)
                if sub:
                    parts.append(f"values: {sub}")
        return "; ".join(parts)

    def rows(self, node, path, required=False):
        """Yields (path, type, default, allowed, description) for `node` and what it contains."""
        node, nullable = self.unwrap(node)
        desc = node.get("description", "")
        default = default_text(node, required)
        type_ = self.type_name(node)
        if nullable:
            type_ += " (or null)"
        props = node.get("properties")
        if props:
            if path:
                yield (path, type_ if type_ != "object" or nullable else "object", default, "", desc)
            req = set(node.get("required", []))
            for key, sub in props.items():
                yield from self.rows(sub, f"{path}.{key}" if path else key, key in req)
            return
        yield (path, type_, default, self.allowed(node), desc)
        items = node.get("items")
        if node.get("type") == "array" or (isinstance(node.get("type"), list) and "array" in node["type"]):
            inner, _ = self.unwrap(items or {})
            if "properties" in inner:
                req = set(inner.get("required", []))
                for key, sub in inner["properties"].items():
                    yield from self.rows(sub, f"{path}[].{key}", key in req)
        ap = node.get("additionalProperties")
        if isinstance(ap, dict):
            inner, _ = self.unwrap(ap)
            if "properties" in inner:
                req = set(inner.get("required", []))
                for key, sub in inner["properties"].items():
                    yield from self.rows(sub, f"{path}.<name>.{key}", key in req)

    def constraints(self, node, path=""):
        """Descriptions of cross-field rules (allOf/anyOf/if-then/dependent*) under `node`."""
        node, _ = self.unwrap(node)
        out = []
        where = f"`{path}`: " if path else ""
        for sub in node.get("allOf", []):
            if sub.get("description"):
                out.append(where + sub["description"])
        for key in ("dependentSchemas",):
            for sub in node.get(key, {}).values():
                if sub.get("description"):
                    out.append(where + sub["description"])
        alts = node.get("anyOf", [])
        if alts and all(a.get("required") for a in alts):
            names = [", ".join(f"`{r}`" for r in a["required"]) for a in alts]
            out.append(where + "at least one of " + ", ".join(names))
        for field, needs in node.get("dependentRequired", {}).items():
            out.append(where + f"`{field}` needs " + ", ".join(f"`{n}`" for n in needs))
        if isinstance(node.get("then"), dict) and node["then"].get("description"):
            out.append(where + node["then"]["description"])
        for key, sub in node.get("properties", {}).items():
            out += self.constraints(sub, f"{path}.{key}" if path else key)
        items = node.get("items")
        if isinstance(items, dict):
            out += self.constraints(items, f"{path}[]")
        ap = node.get("additionalProperties")
        if isinstance(ap, dict):
            out += self.constraints(ap, f"{path}.<name>")
        return out


def num(x):
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return f"{x:,}".replace(",", " ") if isinstance(x, int) and abs(x) >= 100000 else str(x)


def default_text(node, required):
    if required:
        return "required"
    if "default" not in node:
        return ""
    d = node["default"]
    if d is None:
        return "none"
    return code(json.dumps(d, ensure_ascii=False))


def table(rows):
    out = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for path, type_, default, allowed, desc in rows:
        out.append(f"| {code(path)} | {cell(type_)} | {default} | {allowed} | {cell(desc)} |")
    return out


def render_document(name, heading):
    root = load(name)
    w = Walker(root)
    lines = [f"### {heading}", "", cell(root.get("description", "")) +
             f" Schema: [`schemas/{name}.schema.json`](schemas/{name}.schema.json).", ""]
    props = root.get("properties", {})
    req = set(root.get("required", []))
    # Objects with fields of their own get a table each; scalars at the top level share one.
    sections, scalars = [], []
    for key, sub in props.items():
        inner, _ = w.unwrap(sub)
        (sections if inner.get("properties") else scalars).append(key)
    if scalars:
        rows = [r for key in scalars for r in w.rows(props[key], key, key in req)]
        if sections:
            lines += ["#### Top level", ""]
        lines += table(rows) + [""]
    for key in sections:
        node, nullable = w.unwrap(props[key])
        lines += [f"#### `{key}`", ""]
        desc = node.get("description", "")
        note = default_text(node, key in req)
        if desc or note:
            extra = " Absent: off." if note == "none" and "Absent" not in desc else ""
            lines += [cell(desc + extra), ""]
        rows = list(w.rows(props[key], key, key in req))[1:]  # the section itself is the heading
        lines += table(rows) + [""]
    rules = w.constraints(root)
    if rules:
        lines += ["Also checked:", ""] + [f"- {cell(r)}" for r in rules] + [""]
    return lines


def render():
    lines = [BEGIN, ""]
    for name, heading in DOCUMENTS:
        lines += render_document(name, heading)
    lines.append(END)
    return "\n".join(lines) + "\n"


def find_block(text):
    """(start, end) of the generated block: from the line opening with the BEGIN comment (its
    trailing text may differ) to the end of the END comment; None when absent."""
    start = text.find(BEGIN.split(":")[0])
    end = text.find(END, max(start, 0))
    if start < 0 or end < 0:
        return None
    return start, end + len(END)


def replace_block(text, block):
    span = find_block(text)
    if span is None:
        raise SystemExit(f"README.md: marker comments not found ({BEGIN!r} … {END!r})")
    return text[:span[0]] + block.rstrip("\n") + text[span[1]:]


def current_block(text):
    """The generated block of `text` as render() returns it (None without markers)."""
    span = find_block(text)
    return None if span is None else text[span[0]:span[1]] + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    mode.add_argument("--stdout", action="store_true", help="print the generated block")
    ap.add_argument("--readme", type=pathlib.Path, default=README)
    args = ap.parse_args(argv)
    block = render()
    if args.stdout:
        sys.stdout.write(block)
        return 0
    text = args.readme.read_text()
    new = replace_block(text, block)
    if args.check:
        if new != text:
            print(f"{args.readme}: configuration reference is out of date; run `make docs`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.readme.write_text(new)
        print(f"{args.readme}: configuration reference updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
