#!/usr/bin/env python3
"""Writes docs/architecture.svg, the README's architecture picture (stdlib only; `make docs`).

Plain SVG 1.1: boxes, text and arrows, no scripts, fonts or external references, so it renders
the same on GitHub, in browsers and with rsvg-convert. Layout is in absolute coordinates below;
edit them here rather than in the SVG.
"""
import pathlib
import sys
from xml.sax.saxutils import escape

OUT = pathlib.Path(__file__).resolve().parent / "architecture.svg"
W, H = 1280, 800
FONT = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"

# fill, stroke
ENVOY = ("#eaf2fb", "#2b6cb0")
FILTER = ("#fff8eb", "#c26a05")
SERVICE = ("#edf8f0", "#2f855a")
PROVIDER = ("#fdf1f1", "#b83232")
STORE = ("#f4effd", "#6b46c1")
MONITOR = ("#f4f4f4", "#555555")
CLIENT = ("#f4f4f4", "#555555")
CHIP = "#ffffff"

out = []


def rect(x, y, w, h, fill, stroke, rx=8, dash=None, width=1.5):
    d = f' stroke-dasharray="{dash}"' if dash else ""
    out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" fill="{fill}" stroke="{stroke}" '
               f'stroke-width="{width}"{d}/>')


def text(x, y, s, size=12, weight="normal", anchor="start", color="#1a1a1a", italic=False):
    style = ' font-style="italic"' if italic else ""
    out.append(f'<text x="{x}" y="{y}" font-size="{size}" font-weight="{weight}" text-anchor="{anchor}" '
               f'fill="{color}"{style}>{escape(s)}</text>')


def lines(x, y, items, size=10.5, gap=13.5, anchor="start", color="#333333"):
    for i, s in enumerate(items):
        text(x, y + i * gap, s, size=size, anchor=anchor, color=color)


def chip(x, y, w, h, title, sub=(), stroke="#999999", fill=CHIP, title_size=11.5):
    rect(x, y, w, h, fill, stroke, rx=6, width=1.2)
    text(x + w / 2, y + 17, title, size=title_size, weight="bold", anchor="middle")
    lines(x + w / 2, y + 32, sub, size=10, gap=12.5, anchor="middle")


def arrow(points, color="#333333", label=None, at=None, dash=None, both=False, width=1.6, lsize=10.5,
          lanchor="middle"):
    d = " ".join(f"{'M' if i == 0 else 'L'}{x},{y}" for i, (x, y) in enumerate(points))
    dd = f' stroke-dasharray="{dash}"' if dash else ""
    start = ' marker-start="url(#tail)"' if both else ""
    out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="{width}"{dd}{start} '
               f'marker-end="url(#head)"/>')
    if label:
        lx, ly = at
        for i, s in enumerate(label if isinstance(label, (list, tuple)) else [label]):
            text(lx, ly + i * 13, s, size=lsize, anchor=lanchor, color=color)


def build():
    out.clear()
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
               f'font-family="{FONT}">')
    out.append("<title>Tollgate architecture</title>")
    out.append("<desc>Clients call Envoy; the Tollgate Wasm filter in Envoy parses, counts, prices and governs "
               "each LLM request, asks the cache service (admit) and answers cache hits locally, sends the rest "
               "to the LLM providers, meters the response and settles with the cache service. Prometheus scrapes "
               "Envoy and the service.</desc>")
    out.append('<defs>'
               '<marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
               'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker>'
               '<marker id="tail" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
               'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker>'
               '</defs>')
    rect(0, 0, W, H, "#ffffff", "none", rx=0)
    text(20, 34, "Tollgate: LLM cost control inside Envoy", size=19, weight="bold")
    text(20, 54, "request path left to right; call-outs to the cache service below; solid = request, "
                 "dashed = response / scrape", size=11, color="#555555")

    # ---------------------------------------------------------------- clients
    rect(20, 110, 200, 250, *CLIENT)
    text(120, 134, "Applications", size=14, weight="bold", anchor="middle")
    chip(35, 148, 170, 44, "OpenAI SDK", ["base_url=http://envoy/v1"])
    chip(35, 200, 170, 44, "Anthropic SDK", ["base_url=http://envoy"])
    chip(35, 252, 170, 44, "curl, LangChain, …", ["any HTTP client"])
    lines(120, 318, ["only the base URL changes;", "in an Istio mesh, nothing"], size=10.5, anchor="middle")

    # ---------------------------------------------------------------- Envoy + filter
    rect(260, 76, 650, 404, *ENVOY, width=2)
    text(275, 98, "Envoy (tested: 1.40) — static, or Istio sidecar / egress gateway (WasmPlugin)", size=13,
         weight="bold", color=ENVOY[1])
    rect(275, 108, 620, 300, *FILTER, width=2)
    text(290, 129, "Tollgate Wasm filter  (Rust, proxy-wasm; pure policy core + thin host glue)",
         size=12.5, weight="bold", color=FILTER[1])
    # request path
    text(290, 149, "request", size=10.5, weight="bold", color="#555555")
    cw, gap, x0, y0 = 110, 10, 290, 155
    steps = [("parse", ["OpenAI chat,", "completions,", "responses; Claude", "messages"]),
             ("tokenize", ["exact BPE", "(cl100k, o200k)", "as tiktoken;", "Claude: estimate"]),
             ("price", ["LiteLLM table", "+ overrides,", "cached-input", "prices"]),
             ("govern", ["tenant, user, key;", "max_tokens", "default and caps;", "size limits"]),
             ("route·trim·hint", ["model rewrite,", "route header,", "history trim,", "prefix key hints"])]
    for i, (title, sub) in enumerate(steps):
        x = x0 + i * (cw + gap)
        chip(x, y0, cw, 80, title, sub, stroke=FILTER[1])
        if i:
            arrow([(x - gap, y0 + 40), (x - 1, y0 + 40)], color=FILTER[1], width=1.2)
    # admit and its outcomes
    y1 = 256
    chip(290, y1, 150, 56, "admit call-out", ["exact + semantic lookup,", "budget reservation"], stroke=FILTER[1])
    arrow([(x0 + 4 * (cw + gap) + cw / 2, y0 + 80), (x0 + 4 * (cw + gap) + cw / 2, y0 + 90),
           (400, y0 + 90), (400, y1)], color=FILTER[1], width=1.2)
    outcomes = [("hit → local reply", ["cached body as JSON", "or SSE; cost 0"]),
                ("reject → 429", ["budget_exceeded,", "rate_limited"]),
                ("continue upstream", ["fallbacks / cascade", "by call-out"])]
    for i, (title, sub) in enumerate(outcomes):
        x = 470 + i * 142
        chip(x, y1, 132, 56, title, sub, stroke=FILTER[1])
    arrow([(440, y1 + 28), (469, y1 + 28)], color=FILTER[1], width=1.2)
    # response path (starts right of the admit call-out's lines)
    y2 = 336
    text(345, y2 - 6, "response", size=10.5, weight="bold", color="#555555")
    resp = [("meter", 140, ["usage from JSON/SSE,", "or count the output"]),
            ("report", 190, ["x-tollgate-* headers,", "tollgate_* stats, access log"]),
            ("settle (batched)", 170, ["actual cost, release", "reservation, store answer"])]
    x = 345
    for i, (title, w, sub) in enumerate(resp):
        chip(x, y2, w, 56, title, sub, stroke=FILTER[1])
        if i:
            arrow([(x - 20, y2 + 28), (x - 1, y2 + 28)], color=FILTER[1], width=1.2)
        x += w + 20
    # router and admin strips
    rect(345, 418, 385, 50, "#ffffff", ENVOY[1], rx=6, width=1.2)
    text(360, 438, "router → provider clusters", size=11.5, weight="bold", color=ENVOY[1])
    text(360, 455, "x-tollgate-route; ring hash on prefix key", size=10.5, color="#333333")
    rect(745, 418, 122, 50, "#ffffff", ENVOY[1], rx=6, width=1.2)
    text(806, 438, "admin :9901", size=11.5, weight="bold", color=ENVOY[1], anchor="middle")
    text(806, 455, "/stats/prometheus", size=10.5, color="#333333", anchor="middle")

    # clients -> Envoy
    arrow([(220, 200), (274, 200)], label=["POST", "/v1/…"], at=(247, 180), lsize=10)
    arrow([(274, 290), (221, 290)], dash="5,4", label=["JSON /", "SSE"], at=(247, 308), lsize=10)

    # ---------------------------------------------------------------- providers
    text(1100, 96, "LLM providers", size=14, weight="bold", anchor="middle", color=PROVIDER[1])
    rect(960, 108, 280, 52, *PROVIDER)
    text(1100, 130, "OpenAI API", size=12.5, weight="bold", anchor="middle")
    text(1100, 148, "and OpenAI-compatible endpoints", size=10.5, anchor="middle", color="#333333")
    rect(960, 172, 280, 52, *PROVIDER)
    text(1100, 194, "Anthropic API", size=12.5, weight="bold", anchor="middle")
    text(1100, 212, "Messages, streaming", size=10.5, anchor="middle", color="#333333")
    rect(960, 236, 280, 100, *PROVIDER)
    text(1100, 258, "Self-hosted pool", size=12.5, weight="bold", anchor="middle")
    lines(1100, 276, ["vLLM / TGI replicas behind one cluster;", "consistent hashing on the prefix key",
                      "keeps a prompt prefix on the replica", "whose KV cache holds it"], size=10.5, anchor="middle")
    # continue -> router -> providers
    arrow([(887, y1 + 28), (930, y1 + 28), (930, 134), (959, 134)], width=1.6)
    arrow([(930, 198), (959, 198)], width=1.6)
    arrow([(930, y1 + 28), (959, y1 + 28)], width=1.6)
    arrow([(1000, 337), (1000, 365), (896, 365)], dash="5,4", label=["streamed response,", "passed through"],
          at=(1006, 356), lsize=10, lanchor="start")

    # ---------------------------------------------------------------- cache service
    rect(260, 540, 650, 230, *SERVICE, width=2)
    text(275, 562, "Tollgate cache service  (Rust, tokio + axum; one binary: service + operator CLI)", size=13,
         weight="bold", color=SERVICE[1])
    chip(275, 574, 300, 84, "response cache", ["exact: SHA-256 of tenant + normalised request",
                                                 "semantic: ONNX embedder (all-MiniLM-L6-v2)",
                                                 "→ ANN index per partition → guards",
                                                 "(negation, numbers, dates, entities, roles)"],
         stroke=SERVICE[1])
    chip(585, 574, 150, 84, "budgets", ["reserve → settle,", "org/team/user/key,", "token rate limits,",
                                        "spend breaker"], stroke=SERVICE[1])
    chip(745, 574, 150, 84, "spend ledger", ["one record per", "request; /v1/spend,", "CSV / JSONL export,",
                                             "anomaly signal"], stroke=SERVICE[1])
    chip(275, 668, 150, 56, "prefix tracker", ["hot prefixes → Anthropic", "cache_control hints"],
         stroke=SERVICE[1])
    chip(435, 668, 150, 56, "cost dashboard", ["GET /dashboard", "(server-side SVG)"], stroke=SERVICE[1])
    chip(595, 668, 150, 56, "admin API · CLI", ["budgets, spend, cache", "invalidate / warm"], stroke=SERVICE[1])
    chip(755, 668, 140, 56, "GET /metrics", ["tollgate_* (admits,", "budgets, ledger)"], stroke=SERVICE[1])
    text(275, 752, "GET /healthz, /readyz · admin endpoints need a bearer token · calibrate: thresholds from "
                   "labelled pairs", size=10.5, color="#333333")

    # call-outs filter <-> service
    arrow([(303, y1 + 56), (303, 539)], color=SERVICE[1], width=2)
    arrow([(321, 539), (321, y1 + 57)], color=SERVICE[1], width=2, dash="5,4")
    text(330, 520, "POST /v1/admit (timeout 100 ms) → hit | reject | continue", size=10.5, weight="bold",
         color=SERVICE[1])
    arrow([(875, y2 + 56), (875, 539)], color=SERVICE[1], width=2)
    text(868, 520, "POST /v1/settle", size=10.5, weight="bold", color=SERVICE[1], anchor="end")

    # ---------------------------------------------------------------- store
    rect(960, 574, 280, 150, *STORE)
    text(1100, 596, "Store (choose one)", size=13, weight="bold", anchor="middle", color=STORE[1])
    chip(975, 606, 250, 50, "embedded redb", ["cache, budgets, ledger files; one replica"], stroke=STORE[1])
    chip(975, 664, 250, 50, "Redis (shared)", ["many replicas; Lua reservations, streams"], stroke=STORE[1])
    arrow([(910, 650), (959, 650)], color=STORE[1], both=True)

    # ---------------------------------------------------------------- monitoring
    rect(20, 574, 200, 150, *MONITOR)
    text(120, 598, "Prometheus", size=13, weight="bold", anchor="middle")
    lines(120, 616, ["scrapes Envoy stats", "and the service"], size=10.5, anchor="middle")
    chip(35, 650, 170, 60, "Grafana", ["spend, tokens, cache,", "rejections, latency"], stroke=MONITOR[1])
    arrow([(120, 573), (120, 497), (806, 497), (806, 469)], dash="5,4", color=MONITOR[1],
          label=["scrape /stats/prometheus"], at=(126, 491), lsize=10, lanchor="start")
    arrow([(221, 700), (274, 700)], dash="5,4", color=MONITOR[1], label=["/metrics"], at=(247, 692), lsize=10)

    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    svg = build()
    if "--check" in argv:
        return 0 if OUT.exists() and OUT.read_text() == svg else 1
    OUT.write_text(svg)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
