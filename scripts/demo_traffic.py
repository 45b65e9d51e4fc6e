#!/usr/bin/env python3
"""Sample traffic for the demo stack, sent with the official OpenAI and Anthropic SDKs exactly as
an application would: only the base URL points at Envoy. Tenants come from a header.

Usage: demo_traffic.py [BASE_URL [POOL_URL POOL_REPLICA_URL]]
       (defaults http://127.0.0.1:10000, http://127.0.0.1:10001, http://127.0.0.1:8200)
"""
import json
import random
import sys
import time
import urllib.request
import warnings

import anthropic
import openai

warnings.filterwarnings("ignore", category=DeprecationWarning)  # model deprecation notices
BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:10000"
POOL = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:10001"
POOL_REPLICA = sys.argv[3] if len(sys.argv) > 3 else "http://127.0.0.1:8200"
LONG_CONTEXT = (
    "Tollgate sits in Envoy and meters every LLM call: it counts prompt tokens with the model's "
    "own tokenizer, prices them from a maintained table, caps max_tokens, and exports metrics. "
) * 40

rows = []


def oai(tenant, key="sk-demo"):
    return openai.OpenAI(base_url=f"{BASE}/v1", api_key=key, max_retries=0,
                         default_headers={"x-tollgate-tenant": tenant} if tenant else None)


def ant(tenant):
    return anthropic.Anthropic(base_url=BASE, api_key="sk-ant-demo", max_retries=0,
                               default_headers={"x-tollgate-tenant": tenant})


def record(tenant, api, headers, note=""):
    rule = headers.get("x-tollgate-route-rule")
    if rule:
        note = f"{note}; routed by rule {rule}".lstrip("; ")
    if headers.get("x-tollgate-attempts"):
        note = f"{note}; {headers['x-tollgate-attempts']} upstream calls".lstrip("; ")
    rows.append((tenant or "(api key)", api, headers.get("x-tollgate-model", "-"),
                 headers.get("x-tollgate-prompt-tokens", "-"),
                 headers.get("x-tollgate-completion-tokens", "(stream)"),
                 headers.get("x-tollgate-cost-usd", "(in stats)"),
                 headers.get("x-tollgate-cache", "-"), note))


def chat(tenant, model, content, note="", **kw):
    raw = oai(tenant).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "You are a helpful assistant."},
                               {"role": "user", "content": content}], **kw)
    raw.parse()
    record(tenant, "chat", raw.headers, note)


def chat_stream(tenant, model, content, include_usage, note=None, **kw):
    raw = oai(tenant).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], stream=True,
        stream_options={"include_usage": True} if include_usage else None, **kw)
    text = "".join((c.choices[0].delta.content or "") for c in raw.parse() if c.choices)
    assert text, "empty stream"
    if note is None:
        note = "usage in stream" if include_usage else "filter counts the stream"
    record(tenant, "chat stream", raw.headers, note)


def cold_cache():
    """Empties the cache through the service's admin API, so every run starts cold (entries
    otherwise survive restarts of the stack)."""
    import json
    import os
    import urllib.request
    port = os.environ.get("TOLLGATE_CACHE_PORT", "8090")
    token = os.environ.get("TOLLGATE_ADMIN_TOKEN", "demo-admin-token")
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/cache/invalidate", data=b"{}", method="POST",
                                 headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        n = json.load(r)["invalidated"]
    print(f"cache: {n} entries from earlier runs invalidated")


def admin(method, path, body=None):
    import json
    import os
    import urllib.request
    port = os.environ.get("TOLLGATE_CACHE_PORT", "8090")
    token = os.environ.get("TOLLGATE_ADMIN_TOKEN", "demo-admin-token")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def budgets():
    """Budgets live in the cache service (admin API); PUT is idempotent. Spend persists, so the
    interns' small daily budget gets a fresh id per run (earlier runs' ones are deleted): the
    demo shows requests within it, then the 429, however often it runs in a day."""
    for b in admin("GET", "/v1/budgets").get("budgets", []):
        if str(b.get("id", "")).startswith("interns-daily"):
            admin("DELETE", f"/v1/budgets/{b['id']}")
    admin("PUT", f"/v1/budgets/interns-daily-{int(time.time())}",
          {"scope": "team", "target": "interns", "period": "day", "limitUsd": 0.00012})
    admin("PUT", "/v1/budgets/frugal-monthly",
          {"scope": "team", "target": "frugal", "period": "month", "limitUsd": 5.0,
           "softFraction": 0.000001, "downgradeTo": "gpt-4o-mini"})


def settle():
    """Stored answers reach the cache service in batches (every 200 ms): let one go out."""
    time.sleep(0.6)


def messages(tenant, model, content, stream=False):
    client = ant(tenant)
    if stream:
        with client.messages.stream(model=model, max_tokens=400,
                                    messages=[{"role": "user", "content": content}]) as s:
            msg = s.get_final_message()
            headers = s.response.headers
        assert msg.usage.output_tokens > 0
        record(tenant, "messages stream", headers, "estimate replaced by provider usage")
    else:
        raw = client.messages.with_raw_response.create(model=model, max_tokens=400, system="Be brief.",
                                                       messages=[{"role": "user", "content": content}])
        raw.parse()
        record(tenant, "messages", raw.headers)


def pool_demo():
    """Prefix-aware routing on the simulated self-hosted pool: the filter hashes each prompt's
    stable prefix into `x-tollgate-prefix-key` and Envoy's ring hash keeps a prefix on the
    replica whose KV cache holds it. The same requests, round robin, for comparison."""
    rng = random.Random(7)
    systems = [
        f"You are the assistant of internal application number {i}. "
        + " ".join(f"Policy {i}.{j}: answer from the knowledge base of application {i}, cite the "
                   f"section, keep answers short, never invent order numbers or prices." for j in range(40))
        for i in range(12)
    ]
    work = [(rng.randrange(len(systems)), f"Question {n}: what is the status of ticket {1000 + n}?")
            for n in range(60)]

    def stats(method="GET"):
        req = urllib.request.Request(f"{POOL_REPLICA}/_sim/pool-stats", method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            body = r.read()
        return json.loads(body) if body else {}

    client = openai.OpenAI(base_url=f"{POOL}/v1", api_key="none", max_retries=0)
    results = []
    for label, headers in [("prefix-key hash", {}), ("round robin", {"x-pool-lb": "round-robin"})]:
        stats("DELETE")  # cold caches
        started = time.perf_counter()
        replicas = set()
        for sys_i, question in work:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", max_tokens=16, extra_headers=headers,
                messages=[{"role": "system", "content": systems[sys_i]},
                          {"role": "user", "content": question}])
            raw.parse()
            replicas.add(raw.headers.get("x-sim-replica"))
        mean_ms = (time.perf_counter() - started) * 1000 / len(work)
        s = stats()
        results.append((label, s["token_hit_rate"], s["total"]["hit_requests"], mean_ms, len(replicas)))
    print(f"\nSelf-hosted pool ({len(work)} requests, {len(systems)} shared system prompts, 4 replicas "
          f"with KV prefix caches), through Envoy + Tollgate on {POOL}:")
    print("  routing          KV prefix hit rate  requests with a hit  mean latency  replicas used")
    for label, rate, hits, ms, n in results:
        print(f"  {label:<16} {rate:>17.0%}  {hits:>19}  {ms:>9.0f} ms  {n:>13}")
    ratio = results[0][1] / results[1][1] if results[1][1] else float("inf")
    print(f"  hash routing keeps {ratio:.1f}x the round-robin hit rate")


def main():
    cold_cache()
    for q in ["What is the capital of Portugal?", "Translate 'good morning' to German.",
              "Give me a synonym for 'fast'.", "What is 17 * 23?"]:
        chat("search-team", "gpt-4o-mini", q)
    chat("search-team", "gpt-4o", LONG_CONTEXT + "\nSummarise the text above in one sentence.", "long context")
    chat_stream("search-team", "gpt-4o", "Write a haiku about proxies.", include_usage=True)
    chat_stream("search-team", "gpt-4o-mini", "Write a limerick about tokens.", include_usage=False)

    for q in ["My order has not arrived, what can I do?", "How do I reset my password?",
              "Can I change my delivery address?"]:
        messages("support-bot", "claude-haiku-4-5", q)
    messages("support-bot", "claude-sonnet-4-6", "Draft a polite apology for a late delivery.", stream=True)

    raw = oai("analytics").responses.with_raw_response.create(
        model="gpt-4.1", instructions="Answer with a number.", input="How many weeks are in a year?")
    raw.parse()
    record("analytics", "responses", raw.headers)
    chat("analytics", "gpt-4o", "List three uses of SQL window functions.",
         "max_tokens 100000 clamped to 2048", max_tokens=100000)
    chat("analytics", "acme-llama-3.1-8b", "Classify: 'the invoice is overdue' -> billing or shipping?",
         "self-hosted model, price from config")

    for i in range(3):
        chat("batch-jobs", "gpt-4o-mini", f"Extract the year from: 'founded in {1990 + i}'.", "tenant default max_tokens 256")

    # The response cache (answered inside Envoy, cost 0): the same question hits exactly, a resent
    # one with a greeting, other case or a typo hits semantically (local ONNX embeddings); a
    # paraphrase is not served by default (`match: repeats`), near-misses (a negation, another
    # number) go upstream.
    faq = "How do I reverse a list in Python?"
    chat("support-faq", "gpt-4o-mini", faq, "first ask: stored", temperature=0)
    chat("support-faq", "gpt-4o-mini", "How many grams of protein are in 100 grams of chicken breast?", "first ask: stored", temperature=0)
    chat_stream("support-faq", "gpt-4o-mini", "What is the difference between TCP and UDP?", True,
                "streamed answer stored", temperature=0)
    settle()
    chat("support-faq", "gpt-4o-mini", faq, "same question", temperature=0)
    chat("support-faq", "gpt-4o-mini", "hey, how do i reverse a list in pyhton", "repeat: greeting, case, typo", temperature=0)
    chat("support-faq", "gpt-4o-mini", "How can I reverse a Python list?", "paraphrase: not served by default", temperature=0)
    chat("support-faq", "gpt-4o-mini", "How do I not reverse a list in Python?", "negation: guarded", temperature=0)
    chat("support-faq", "gpt-4o-mini", "How many grams of protein are in 200 grams of chicken breast?", "other number: guarded", temperature=0)
    chat_stream("support-faq", "gpt-4o-mini", "hi! what is the difference between tcp and udp", True,
                "repeat, replayed as SSE", temperature=0)
    chat("search-team", "gpt-4o-mini", faq, "another tenant: isolated", temperature=0)

    # Budgets (reserve the worst case on admit, settle the actual cost): a soft limit downgrades
    # to a cheaper model, a hard limit answers 429 in the provider's shape.
    budgets()
    chat("frugal", "gpt-4o", "Name three uses of a hash map.", "soft limit: downgraded", max_tokens=60)
    for i in range(6):
        try:
            chat("interns", "gpt-4o-mini", f"Give me fun fact number {i} about octopuses.",
                 "within the daily budget", max_tokens=60)
            settle()
        except openai.RateLimitError as e:
            rows.append(("interns", "chat", "gpt-4o-mini", "-", "-", "-", "-",
                         f"rejected 429: {e.body['code']}, retry-after {e.response.headers.get('retry-after')} s"))
            break

    # Fallback chains and cheap-first cascades (envoy/demo-config.json). The simulator's
    # x-sim-* headers inject faults for one model only, as a provider outage would.
    chat("resilient-app", "gpt-4o-mini", "Suggest a name for a bakery.",
         "gpt-4o-mini answered 429: fell back",
         extra_headers={"x-sim-status": "429", "x-sim-fault-model": "gpt-4o-mini"})
    chat("cheap-first", "gpt-4o", "What is the boiling point of water at sea level?",
         "cheap model's answer passed the checks")
    raw = oai("cheap-first").chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Explain how a bloom filter works."}],
        extra_headers={"x-sim-refuse": "1", "x-sim-fault-model": "gpt-4o-mini"})
    raw.parse()
    record("cheap-first", "chat", raw.headers,
           f"cheap answer refused: {raw.headers.get('x-tollgate-cascade', '')}, both answers metered")

    # No tenant header: the tenant is a hash of the API key (the key itself is never stored).
    raw = oai(None, key="sk-team-without-header").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}])
    raw.parse()
    record(None, "chat", raw.headers, "tenant = hash of API key")

    # Bad input: a clear error in the provider's own shape, never sent upstream.
    try:
        oai("search-team").chat.completions.create(model="gpt-4o", messages="not a list")
    except openai.BadRequestError as e:
        rows.append(("search-team", "chat", "gpt-4o", "-", "-", "-", "-", f"rejected 400: {e.body['code']}"))

    widths = [14, 16, 18, 7, 10, 12, 13, 0]
    head = ("tenant", "api", "model", "prompt", "completion", "cost USD", "cache", "note")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print(f"\n{len(rows)} requests sent through {BASE}")
    pool_demo()


if __name__ == "__main__":
    main()
