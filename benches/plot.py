#!/usr/bin/env python3
"""Plots of the committed benchmark results.

    .venv/bin/python benches/plot.py [--out DIR] [--data FILE]     (make plots)

Reads the Markdown tables in benches/results/*.md — the numbers the benchmarks printed and the
README quotes; nothing here is measured or estimated — writes the extracted numbers to
benches/results/plot-data.json (machine-readable, one record per table row, with its source
file) and draws PNGs into benches/results/plots/:

    load.png      Envoy with vs without the filter: throughput and latency (load.md)
    cache.png     cache admit latency by store size, exact vs semantic, and hits through Envoy
                  against the provider (cache.md)
    semantic.png  semantic hit rate vs false hits per threshold, cosine alone vs with guards
                  (semantic.md)
    budgets.png   budget admit p99 by backend, scopes and concurrency (budgets.md)
    savings.png   cost of the complexity-routing replay by policy (savings.md)

Tables are found by their header row, so prose edits around them do not matter; a table that
is missing or changed shape stops the script with the file and header it looked for.
"""
import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benches" / "results"
OUT = RESULTS / "plots"
DATA = RESULTS / "plot-data.json"

# ------------------------------------------------------------------ Markdown tables


def tables(path):
    """Every pipe table of a Markdown file: {"section" (nearest heading), "h2" (nearest level-2
    heading), "header", "rows"} (cells stripped)."""
    out, section, h2, lines = [], "", "", path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
            if line.startswith("## "):
                h2 = section
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|\s*$", lines[i + 1]):
            header = split_row(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(split_row(lines[i]))
                i += 1
            out.append({"section": section, "h2": h2, "header": header, "rows": rows})
            continue
        i += 1
    return out


def split_row(line):
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip() for c in cells]


def find(path, *columns, section=None):
    """The tables of `path` whose header has all `columns` (and whose section starts with `section`)."""
    found = [t for t in tables(path)
             if all(c in t["header"] for c in columns) and (section is None or t["section"].startswith(section))]
    if not found:
        raise SystemExit(f"{path.relative_to(ROOT)}: no table with columns {columns}"
                         + (f" under '{section}'" if section else ""))
    return found


def column(header, prefix):
    """Index of the first column whose name starts with `prefix`."""
    for i, name in enumerate(header):
        if name.startswith(prefix):
            return i
    raise SystemExit(f"no column starting with {prefix!r} in {header}")


def plain(cell):
    return cell.replace("**", "").replace("`", "").strip()


def number(cell):
    """First number in a cell (`**0.036** [0.035–0.041]` -> 0.036, `21,000` -> 21000); None for `-`/`–`."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", plain(cell))
    return float(m.group(0).replace(",", "")) if m else None


def numbers(cell):
    return [float(x.replace(",", "")) for x in re.findall(r"\d[\d,]*(?:\.\d+)?", plain(cell))]


def pair(cell):
    """`0.026 / 0.055` -> (0.026, 0.055)."""
    a, b = (number(x) for x in plain(cell).split("/")[:2])
    return a, b


# ------------------------------------------------------------------ extraction


def extract():
    data = {}
    src = RESULTS / "load.md"
    t = find(src, "prompt", "Envoy", "req/s", "p50 ms", "p99 ms")[0]
    h = t["header"]
    optional = {"rss_mib": "RSS MiB", "startup_ms": "startup ms"}
    first = src.read_text().splitlines()[0]
    conditions = re.search(r"wrk (-t\d+ -c\d+ -d\d+s)", first)
    runs = re.search(r"median of (\d+) runs", first)
    data["load"] = {"source": "benches/results/load.md",
                    "wrk": conditions.group(1) if conditions else "",
                    "runs": int(runs.group(1)) if runs else 0,
                    "rows": [
        {"prompt": plain(r[h.index("prompt")]), "envoy": plain(r[h.index("Envoy")]),
         "req_s": number(r[h.index("req/s")]), "p50_ms": number(r[h.index("p50 ms")]),
         "p99_ms": number(r[h.index("p99 ms")]),
         **{k: number(r[h.index(col)]) for k, col in optional.items() if col in h}}
        for r in t["rows"]]}

    src = RESULTS / "cache.md"
    t = find(src, "entries", "layout", "c", "exact hit p50 / p99", "semantic miss p50 / p99",
             "semantic hit p50 / p99", section="Latency by size")[0]
    h = t["header"]
    rows = []
    for r in t["rows"]:
        ex, sm, sh = (pair(r[h.index(k)]) for k in ("exact hit p50 / p99", "semantic miss p50 / p99",
                                                    "semantic hit p50 / p99"))
        rows.append({"entries": plain(r[h.index("entries")]), "layout": plain(r[h.index("layout")]),
                     "c": int(number(r[h.index("c")])),
                     "exact_hit_ms": {"p50": ex[0], "p99": ex[1]},
                     "semantic_miss_ms": {"p50": sm[0], "p99": sm[1]},
                     "semantic_hit_ms": {"p50": sh[0], "p99": sh[1]}})
    data["cache_admit"] = {"source": "benches/results/cache.md", "table": t["section"], "rows": rows}
    t = find(src, "store at start", "path", "samples", "p50 ms", "p99 ms")[0]
    h = t["header"]
    data["cache_e2e"] = {"source": "benches/results/cache.md", "table": t["section"], "rows": [
        {"store": plain(r[h.index("store at start")]), "path": plain(r[h.index("path")]),
         "samples": int(number(r[h.index("samples")])), "p50_ms": number(r[h.index("p50 ms")]),
         "p99_ms": number(r[h.index("p99 ms")])} for r in t["rows"]]}

    src = RESULTS / "semantic.md"
    # One per-threshold table under each "## <set>.jsonl …" section.
    sets = {}
    for t in find(src, "threshold", "hit rate, cosine", "false hits, cosine", "hit rate, + guards",
                  "false hits, + guards"):
        h = t["header"]
        m = re.match(r"(\w+)\.jsonl", t["h2"])
        if not m:
            raise SystemExit(f"{src.relative_to(ROOT)}: per-threshold table under '{t['h2']}', not a '## <set>.jsonl' section")
        sets[m.group(1)] = [{"threshold": number(r[h.index("threshold")]),
                             "hit_rate_cosine": number(r[h.index("hit rate, cosine")]),
                             "false_hits_cosine": number(r[h.index("false hits, cosine")]),
                             "hit_rate_guards": number(r[h.index("hit rate, + guards")]),
                             "false_hits_guards": number(r[h.index("false hits, + guards")])}
                            for r in t["rows"]]
    data["semantic"] = {"source": "benches/results/semantic.md",
                        "note": "percent of true duplicates served (hit rate) and of hard negatives served "
                                "(false hits), per cosine threshold",
                        "sets": sets}

    src = RESULTS / "budgets.md"
    t = find(src, "backend", "scopes", "c", "workload", "admit p99 [runs]", section="Results")[0]
    h = t["header"]
    rows = []
    for r in t["rows"]:
        p99 = numbers(r[h.index("admit p99 [runs]")])
        errors = number(r[h.index("errors (3 runs)")]) if "errors (3 runs)" in h else None
        rows.append({"backend": plain(r[h.index("backend")]), "scopes": int(number(r[h.index("scopes")])),
                     "c": plain(r[h.index("c")]), "workload": plain(r[h.index("workload")]),
                     "ops_s": number(r[h.index("ops/s")]), "admit_p50_ms": number(r[h.index("admit p50")]),
                     "admit_p99_ms": p99[0], "admit_p99_runs_ms": p99[1:3] if len(p99) >= 3 else None,
                     "errors": errors})
    data["budgets"] = {"source": "benches/results/budgets.md", "table": t["section"], "rows": rows}
    fixes = find(src, "backend", "scopes", "c", "workload", "admit p99 [runs], before", "admit p99 [runs], after")
    t = fixes[0]
    h = t["header"]
    rows = []
    for r in t["rows"]:
        before, after = numbers(r[h.index("admit p99 [runs], before")]), numbers(r[h.index("admit p99 [runs], after")])
        err = next((i for i, n in enumerate(h) if n.startswith("errors")), None)
        errs = numbers(r[err]) if err is not None else []
        rows.append({"backend": plain(r[h.index("backend")]), "scopes": int(number(r[h.index("scopes")])),
                     "c": plain(r[h.index("c")]), "workload": plain(r[h.index("workload")]),
                     "admit_p99_ms_before": before[0], "admit_p99_runs_ms_before": before[1:3],
                     "admit_p99_ms_after": after[0], "admit_p99_runs_ms_after": after[1:3],
                     "errors_before": errs[0] if errs else None, "errors_after": errs[1] if len(errs) > 1 else None})
    data["budgets_fixes"] = {"source": "benches/results/budgets.md", "table": t["section"], "rows": rows}

    src = RESULTS / "savings.md"
    runs = [t for t in tables(src) if t["header"][:1] == ["run"] and any(h.startswith("cost") for h in t["header"])]
    pols = [t for t in tables(src) if t["header"][:1] == ["policy"] and any(h.startswith("cost") for h in t["header"])]
    if not runs or not pols:
        raise SystemExit(f"{src.relative_to(ROOT)}: no 'run' / 'policy' cost tables")
    rows = []
    for t in runs + pols:
        h = t["header"]
        cost = column(h, "cost")
        down = next((i for i, n in enumerate(h) if n.startswith("complex prompts routed down")), None)
        routed = next((i for i, n in enumerate(h) if n.startswith("routed down")), None)
        saved = next((i for i, n in enumerate(h) if n.startswith("saved") or n.startswith("vs ")), None)
        for r in t["rows"]:
            rows.append({"name": plain(r[0]), "kind": h[0], "cost_usd": number(r[cost]),
                         "saved": plain(r[saved]).lstrip("−-") if saved is not None and number(r[saved]) else None,
                         "routed_down": plain(r[routed]) if routed is not None else None,
                         "complex_routed_down": plain(r[down]) if down is not None else None})
    data["savings"] = {"source": "benches/results/savings.md", "rows": rows}
    return data


# ------------------------------------------------------------------ plots

COLORS = {"base": "#8c8c8c", "tollgate": "#1f6fb4", "exact": "#2a9d5c", "miss": "#e39b22",
          "hit": "#7b4fb0", "provider": "#c0392b", "redis": "#c0392b", "embedded": "#1f6fb4"}


def setup_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("benches/plot.py needs matplotlib: `make setup` installs it into .venv "
                         "(scripts/requirements.txt); run it with .venv/bin/python") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "font.size": 9.5, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True,
                         "legend.frameon": False, "axes.titlesize": 10.5, "axes.titleweight": "bold"})
    return plt


def footer(fig, text):
    fig.text(0.01, 0.01, text, fontsize=7.5, color="#555555", ha="left", va="bottom")


def plot_load(plt, d, out):
    rows = d["rows"]
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    variants = list(dict.fromkeys(r["envoy"] for r in rows))
    base_name = next(v for v in variants if "no filter" in v)
    variants.remove(base_name)
    variants.insert(0, base_name)
    get = {(r["prompt"], r["envoy"]): r for r in rows}
    palette = [COLORS["base"], COLORS["tollgate"], "#08519c", "#6baed6"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    x = list(range(len(prompts)))
    w = 0.8 / len(variants)
    labels = [p.replace(" KB ", " KB\n") for p in prompts]
    for k, v in enumerate(variants):
        xs = [i + (k - (len(variants) - 1) / 2) * w for i in x]
        vals = [get[(p, v)]["req_s"] if (p, v) in get else float("nan") for p in prompts]
        bars = a1.bar(xs, vals, w, color=palette[k % len(palette)],
                      label="Envoy, no filter" if v == base_name else f"Envoy + {v}")
        if v != base_name:
            for b, val, p in zip(bars, vals, prompts):
                base = get.get((p, base_name))
                if base and val == val:
                    a1.annotate(f"{val / base['req_s']:.0%}", (b.get_x() + b.get_width() / 2, val), ha="center",
                                va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        for j, (metric, hatch) in enumerate((("p50_ms", None), ("p99_ms", "//"))):
            xs2 = [i + (j - 0.5) * 0.4 + (k - (len(variants) - 1) / 2) * (0.4 / len(variants)) for i in x]
            a2.bar(xs2, [get[(p, v)][metric] if (p, v) in get else float("nan") for p in prompts],
                   0.4 / len(variants), color=palette[k % len(palette)], hatch=hatch, edgecolor="white")
    a1.set_ylim(0, max(r["req_s"] for r in rows) * 1.3)
    a1.set_xticks(x, labels)
    a1.set_ylabel("requests/s (1 Envoy worker)")
    a1.set_title("Throughput, every prompt unique (% of no-filter)")
    a1.legend(loc="upper right", fontsize=8)
    a2.set_xticks(x, labels)
    a2.set_ylabel("latency, ms")
    a2.set_title("Latency p50 (solid) and p99 (hatched), same colours")
    footer(fig, f"Source: {d['source']} — Envoy 1.40, 1 worker, wrk {d['wrk']}, median of {d['runs']} runs, 2-core VM.")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out / "load.png")
    plt.close(fig)


def plot_cache(plt, d_admit, d_e2e, out):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3), gridspec_kw={"width_ratios": [1.15, 1]})
    rows = [r for r in d_admit["rows"] if r["c"] == 1]
    labels = [("0" if r["entries"] == "0" else r["entries"]) + (" (1k×1k)" if r["layout"] == "spread" else "")
              for r in rows]
    x = range(len(rows))
    w = 0.26
    for k, (key, name, color) in enumerate((("exact_hit_ms", "exact hit", COLORS["exact"]),
                                           ("semantic_miss_ms", "semantic miss", COLORS["miss"]),
                                           ("semantic_hit_ms", "semantic hit", COLORS["hit"]))):
        xs = [i + (k - 1) * w for i in x]
        a1.bar(xs, [r[key]["p50"] for r in rows], w, color=color, label=f"{name} p50")
        a1.scatter(xs, [r[key]["p99"] for r in rows], marker="_", s=260, color="black", zorder=3,
                   label="p99" if k == 0 else None)
    a1.axhline(15, color=COLORS["provider"], ls="--", lw=1, label="target: semantic p99 < 15 ms")
    a1.set_yscale("log")
    a1.set_xticks(list(x), labels)
    a1.set_xlabel("entries in the store")
    a1.set_ylabel("admit latency in the service, ms (log)")
    a1.set_title("Cache admit latency by store size (c=1)")
    a1.set_ylim(0.008, 3000)
    a1.legend(loc="upper left", fontsize=8, ncol=2)

    e2e = d_e2e["rows"]
    stores = list(dict.fromkeys(r["store"] for r in e2e))
    paths = ["provider alone (no Envoy)", "miss (through to the provider)", "exact hit", "semantic hit"]
    names = {"provider alone (no Envoy)": "provider\n(250 ms sim)", "miss (through to the provider)": "miss",
             "exact hit": "exact hit", "semantic hit": "semantic hit"}
    colors = {"provider alone (no Envoy)": COLORS["provider"], "miss (through to the provider)": COLORS["miss"],
              "exact hit": COLORS["exact"], "semantic hit": COLORS["hit"]}
    w = 0.38
    for k, store in enumerate(stores):
        got = {r["path"]: r for r in e2e if r["store"] == store}
        for i, p in enumerate(paths):
            if p not in got:
                continue
            xpos = i + (k - 0.5) * w
            a2.bar(xpos, got[p]["p50_ms"], w, color=colors[p], alpha=1.0 if k == 0 else 0.6,
                   edgecolor="black" if k else None, lw=0.6)
            a2.scatter([xpos], [got[p]["p99_ms"]], marker="_", s=200, color="black", zorder=3)
            a2.annotate(f"{got[p]['p50_ms']:g}", (xpos, got[p]["p50_ms"]), ha="center", va="bottom", fontsize=7.5,
                        xytext=(0, 2), textcoords="offset points")
    a2.set_yscale("log")
    a2.set_xticks(range(len(paths)), [names[p] for p in paths])
    a2.set_ylabel("client latency p50 (bar), p99 (tick), ms (log)")
    a2.set_title("Through Envoy: hits vs the provider")
    from matplotlib.patches import Patch
    a2.legend(handles=[Patch(color="#777777", label=f"store: {stores[0]}"),
                       Patch(facecolor="#777777", alpha=0.6, edgecolor="black", label=f"store: {stores[1]}")]
              if len(stores) > 1 else None, loc="upper right", fontsize=8)
    footer(fig, f"Source: {d_admit['source']} — all-MiniLM-L6-v2 int8 on 2 CPU threads, embedded store, 2 ms batching "
                "window; machine shared with builds (p99 pessimistic).")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out / "cache.png")
    plt.close(fig)


def plot_semantic(plt, d, out):
    from matplotlib.lines import Line2D
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.6))
    styles = {"holdout3": "-", "holdout2": "--", "holdout": "-.", "test": ":"}
    for name, rows in d["sets"].items():
        th = [r["threshold"] for r in rows]
        ls = styles.get(name, (0, (1, 3)))
        a1.plot(th, [r["hit_rate_guards"] for r in rows], ls=ls, color=COLORS["tollgate"])
        a1.plot(th, [r["false_hits_guards"] for r in rows], ls=ls, color=COLORS["provider"])
        a2.plot([r["false_hits_cosine"] for r in rows], [r["hit_rate_cosine"] for r in rows], ls=ls,
                color=COLORS["base"], marker=".", ms=4)
        a2.plot([r["false_hits_guards"] for r in rows], [r["hit_rate_guards"] for r in rows], ls=ls,
                color=COLORS["tollgate"], marker=".", ms=4)
        at = next((r for r in rows if abs(r["threshold"] - 0.95) < 1e-9), None)
        if at:
            a2.scatter([at["false_hits_guards"]], [at["hit_rate_guards"]], s=45, facecolor="none",
                       edgecolor="black", zorder=4)
    set_handles = [Line2D([], [], color="black", ls=styles.get(n, (0, (1, 3))), label=n) for n in d["sets"]]
    a1.axvline(0.95, color="black", lw=0.8)
    a1.text(0.951, 78, "default 0.95", fontsize=8, va="top")
    a1.set_ylim(0, 100)
    a1.set_xlabel("cosine threshold")
    a1.set_ylabel("% (with guards)")
    a1.set_title("Hit rate and false hits per threshold, with guards")
    a1.legend(handles=[Line2D([], [], color=COLORS["tollgate"], label="hit rate"),
                       Line2D([], [], color=COLORS["provider"], label="false hits")] + set_handles,
              fontsize=7.5, ncol=3, loc="upper right")
    a2.set_xscale("symlog", linthresh=1)
    a2.set_xlim(-0.1, 90)
    a2.set_ylim(0, 100)
    a2.set_xlabel("false hits: % of hard negatives served (symlog)")
    a2.set_ylabel("hit rate: % of true duplicates served")
    a2.set_title("Trade-off: cosine alone vs cosine + guards")
    a2.legend(handles=[Line2D([], [], color=COLORS["base"], marker=".", label="cosine only"),
                       Line2D([], [], color=COLORS["tollgate"], marker=".", label="cosine + guards"),
                       Line2D([], [], ls="none", marker="o", mfc="none", mec="black", label="threshold 0.95")]
              + set_handles, fontsize=7.5, ncol=3, loc="upper left")
    footer(fig, f"Source: {d['source']} — all-MiniLM-L6-v2; evaluation sets {', '.join(d['sets'])} (sizes, and which "
                "guard version had seen each set, in semantic.md).")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out / "semantic.png")
    plt.close(fig)


SERIES = [("admit", "1", "admit only, c=1"), ("admit", "16", "admit only, c=16"),
          ("admit+settle", "open 500/s", "open loop 500 req/s")]
BACKEND_NAMES = {"embedded": "embedded store (redb)", "redis": "Redis"}


def _whiskers(v, runs):
    runs = runs if runs and len(runs) == 2 else [v, v]
    return max(v - runs[0], 0), max(runs[1] - v, 0)


def plot_budgets(plt, d, fixes, out):
    rows = d["rows"]
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    scopes = sorted({r["scopes"] for r in rows})
    fig, axes = plt.subplots(2, len(backends), figsize=(11, 8.4), sharey=True, squeeze=False)
    shades = ["#9ecae1", "#3182bd", "#08519c"]
    w = 0.26
    for ax, backend in zip(axes[0], backends):
        for k, (workload, c, label) in enumerate(SERIES):
            vals, lo, hi, errs = [], [], [], []
            for sc in scopes:
                r = next((r for r in rows if r["backend"] == backend and r["scopes"] == sc
                          and r["workload"] == workload and r["c"] == c), None)
                v = r["admit_p99_ms"] if r else float("nan")
                l, h = _whiskers(v, r["admit_p99_runs_ms"] if r else None)
                vals.append(v)
                lo.append(l)
                hi.append(h)
                errs.append(r["errors"] if r else None)
            xs = [i + (k - 1) * w for i in range(len(scopes))]
            ax.bar(xs, vals, w, color=shades[k], label=label + (" (admit inside admit+settle)" if k == 2 else ""),
                   yerr=[lo, hi], capsize=2, error_kw={"lw": 0.8, "ecolor": "#333333"})
            for xpos, v, top, e in zip(xs, vals, [v + h for v, h in zip(vals, hi)], errs):
                ax.annotate(f"{v:g}", (xpos, top), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                            textcoords="offset points")
                if e:
                    ax.annotate(f"{int(e)} errors\n(3 runs)", (xpos, v), ha="right", va="center", fontsize=7.5,
                                color=COLORS["provider"], xytext=(-14, 0), textcoords="offset points",
                                fontweight="bold")
        ax.axhline(2, color=COLORS["provider"], ls="--", lw=1, label="target: p99 ≤ 2 ms at 1,000 scopes")
        ax.set_yscale("log")
        ax.set_xticks(range(len(scopes)), [f"{sc:,}" for sc in scopes])
        ax.set_xlabel("budget scopes")
        ax.set_title(f"{BACKEND_NAMES.get(backend, backend)}: {d['table']}")
    axes[0][0].set_ylabel("budget admit p99, ms (log)")
    axes[0][0].legend(fontsize=7.5, loc="upper left")

    frows = fixes["rows"]
    fscopes = sorted({r["scopes"] for r in frows})
    w = 0.13
    for ax, backend in zip(axes[1], backends):
        for k, (workload, c, label) in enumerate(SERIES):
            for j, when in enumerate(("before", "after")):
                xs, vals, lo, hi, errs = [], [], [], [], []
                for i, sc in enumerate(fscopes):
                    r = next((r for r in frows if r["backend"] == backend and r["scopes"] == sc
                              and r["workload"] == workload and r["c"] == c), None)
                    if not r:
                        continue
                    v = r[f"admit_p99_ms_{when}"]
                    l, h = _whiskers(v, r[f"admit_p99_runs_ms_{when}"])
                    xs.append(i + (2 * k + j - 2.5) * w)
                    vals.append(v)
                    lo.append(l)
                    hi.append(h)
                    errs.append(r[f"errors_{when}"])
                ax.bar(xs, vals, w, color=shades[k], alpha=0.45 if when == "before" else 1.0,
                       hatch="//" if when == "before" else None, edgecolor="white",
                       label=f"{label}, {when}" if backend == backends[0] else None,
                       yerr=[lo, hi], capsize=1.5, error_kw={"lw": 0.7, "ecolor": "#333333"})
                for xpos, v, h, e in zip(xs, vals, hi, errs):
                    ax.annotate(f"{v:g}", (xpos, v + h), ha="center", va="bottom", fontsize=6.5, xytext=(0, 2),
                                textcoords="offset points", rotation=90)
                    if e:
                        ax.text(xpos, v ** 0.5 if v > 1 else v, f"{int(e)} errors", ha="center", va="center",
                                fontsize=7.5, rotation=90, color=COLORS["provider"], fontweight="bold")
        ax.axhline(2, color=COLORS["provider"], ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xticks(range(len(fscopes)), [f"{sc:,}" for sc in fscopes])
        ax.set_xlabel("budget scopes")
        ax.set_title(f"{BACKEND_NAMES.get(backend, backend)}: before → after the fixes")
        ax.set_ylim(top=3e5)
    axes[1][0].set_ylabel("budget admit p99, ms (log)")
    axes[1][0].legend(fontsize=7, loc="upper left", ncol=2)
    footer(fig, f"Source: {d['source']} — Budgets::admit in-process, 3 windows per request, 2-core VM, Redis on loopback. "
                "Top: invocation D,\nquiet machine. Bottom: invocations F (before) and G (after) on a shared machine "
                "(load 2.5–5.4). Bars: p99 of the median run; whiskers: p99 range over the 3 runs; hatched: before.")
    fig.tight_layout(rect=(0, 0.045, 1, 1))
    fig.savefig(out / "budgets.png")
    plt.close(fig)


def plot_savings(plt, d, out):
    rows = d["rows"]
    base = next(r for r in rows if r["kind"] == "run" and "no routing" in r["name"])["cost_usd"]
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(rows) + 1.6))
    names = [r["name"] for r in rows]
    colors = [COLORS["base"] if r["kind"] == "run" else COLORS["tollgate"] for r in rows]
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r["cost_usd"] for r in rows], color=colors, height=0.6)
    for y, r in zip(ys, rows):
        note = f"${r['cost_usd']:.4f}"
        if r["saved"]:
            note += f"  ({r['saved']} saved)"
        if r["complex_routed_down"]:
            note += f"  · complex prompts routed down: {r['complex_routed_down']}"
        ax.annotate(note, (r["cost_usd"], y), va="center", fontsize=8.5, xytext=(4, 0), textcoords="offset points")
    import textwrap
    ax.set_yticks(ys, ["\n".join(textwrap.wrap(n, 58)) for n in names], fontsize=8.5)
    ax.set_xlim(0, base * 1.75)
    ax.set_xlabel("cost of the replay, USD (155 held-out prompts, all asking for gpt-4o)")
    ax.set_title("Complexity routing: replay cost by policy")
    ax.grid(axis="y", visible=False)
    footer(fig, f"Source: {d['source']} — grey: measured runs (no routing, all gpt-4o-mini); blue: policies "
                "(see savings.md for which rows were replayed and which costed offline).")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out / "savings.png")
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Plots of benches/results/*.md")
    ap.add_argument("--out", type=pathlib.Path, default=OUT, help="directory for the PNGs")
    ap.add_argument("--data", type=pathlib.Path, default=DATA, help="where to write the extracted numbers")
    args = ap.parse_args(argv)
    data = extract()
    args.data.parent.mkdir(parents=True, exist_ok=True)
    args.data.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    plt = setup_matplotlib()
    args.out.mkdir(parents=True, exist_ok=True)
    plot_load(plt, data["load"], args.out)
    plot_cache(plt, data["cache_admit"], data["cache_e2e"], args.out)
    plot_semantic(plt, data["semantic"], args.out)
    plot_budgets(plt, data["budgets"], data["budgets_fixes"], args.out)
    plot_savings(plt, data["savings"], args.out)
    for name in ("load", "cache", "semantic", "budgets", "savings"):
        print(args.out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
