#!/usr/bin/env python3
"""Per-tenant / per-model cost report from Envoy's Tollgate stats.

Usage: report.py [ADMIN_URL]   (default http://127.0.0.1:9901)
"""
import collections
import re
import sys
import urllib.request

ADMIN = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9901"
LINE = re.compile(r'^(tollgate_[a-z_]+)\{([^}]*)\} (\d+)$')


def main():
    text = urllib.request.urlopen(f"{ADMIN}/stats/prometheus", timeout=5).read().decode()
    cells = collections.defaultdict(lambda: collections.Counter())
    rejected = collections.Counter()
    unpriced = collections.Counter()
    cache = collections.defaultdict(collections.Counter)  # tenant -> outcome -> requests
    saved = collections.Counter()  # tenant -> micro-USD
    fallbacks = collections.Counter()  # "model (reason)" -> attempts that failed over
    escalations = collections.Counter()  # "cheap model (check)" -> cascade escalations
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))), int(m.group(3))
        if name == "tollgate_rejected_total":
            rejected[labels.get("reason", "?")] += value
        elif name == "tollgate_unpriced_requests_total":
            unpriced[labels.get("model", "?")] += value
        elif name == "tollgate_cache_requests_total":
            cache[labels.get("tenant", "?")][labels.get("cache", "?")] += value
        elif name == "tollgate_saved_micro_usd_total":
            saved[labels.get("tenant", "?")] += value
        elif name == "tollgate_fallbacks_total":
            fallbacks[f'{labels.get("model", "?")} ({labels.get("reason", "?")})'] += value
        elif name == "tollgate_cascade_escalations_total":
            escalations[f'{labels.get("model", "?")} ({labels.get("reason", "?")})'] += value
        elif "tenant" in labels and "model" in labels:
            cells[(labels["tenant"], labels["model"])][name] += value

    print(f"{'tenant':<26}{'model':<20}{'requests':>9}{'tokens in':>11}{'tokens out':>11}{'cached':>8}{'cost USD':>12}")
    print("-" * 97)
    by_tenant = collections.Counter()
    total = collections.Counter()
    for (tenant, model), c in sorted(cells.items()):
        if not c["tollgate_requests_total"]:
            continue
        cost = c["tollgate_cost_micro_usd_total"] / 1e6
        by_tenant[tenant] += c["tollgate_cost_micro_usd_total"]
        for k, v in c.items():
            total[k] += v
        cost_s = f"{cost:.6f}" if model not in unpriced else "unknown"
        print(f"{tenant:<26}{model:<20}{c['tollgate_requests_total']:>9}{c['tollgate_tokens_in_total']:>11}"
              f"{c['tollgate_tokens_out_total']:>11}{c['tollgate_tokens_cached_total']:>8}{cost_s:>12}")
    print("-" * 97)
    print(f"{'total':<46}{total['tollgate_requests_total']:>9}{total['tollgate_tokens_in_total']:>11}"
          f"{total['tollgate_tokens_out_total']:>11}{total['tollgate_tokens_cached_total']:>8}"
          f"{total['tollgate_cost_micro_usd_total'] / 1e6:>12.6f}")
    print("\nspend by tenant:")
    for tenant, micro in by_tenant.most_common():
        print(f"  {tenant:<26}${micro / 1e6:.6f}")
    if cache:
        outcomes = ["hit-exact", "hit-semantic", "miss", "bypass", "error"]
        print(f"\nresponse cache:\n  {'tenant':<26}" + "".join(f"{o:>14}" for o in outcomes) + f"{'saved USD':>12}")
        for tenant in sorted(cache):
            print(f"  {tenant:<26}" + "".join(f"{cache[tenant][o]:>14}" for o in outcomes)
                  + f"{saved[tenant] / 1e6:>12.6f}")
        hits = sum(c["hit-exact"] + c["hit-semantic"] for c in cache.values())
        spent = total["tollgate_cost_micro_usd_total"]
        print(f"  {hits} requests answered by the cache saved ${sum(saved.values()) / 1e6:.6f}"
              f" (spend without the cache: ${(spent + sum(saved.values())) / 1e6:.6f})")
    if fallbacks:
        print("\nfallbacks (failed attempt: model, reason): " + ", ".join(f"{k}={v}" for k, v in sorted(fallbacks.items())))
    if escalations:
        print("cascade escalations (cheap model, failed check): " + ", ".join(f"{k}={v}" for k, v in sorted(escalations.items())))
    if rejected:
        print("\nrejected by the filter: " + ", ".join(f"{k}={v}" for k, v in sorted(rejected.items())))
    if unpriced:
        print("models without a price: " + ", ".join(f"{k} ({v})" for k, v in sorted(unpriced.items())))
    if not cells:
        print("(no metered traffic yet)")


if __name__ == "__main__":
    main()
