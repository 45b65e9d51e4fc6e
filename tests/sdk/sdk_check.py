#!/usr/bin/env python3
"""Check the simulated provider against the official OpenAI and Anthropic SDKs.

Usage: sdk_check.py BASE_URL      (e.g. http://127.0.0.1:8081)

Runs plain and streaming calls of Chat Completions, the Responses API and
Anthropic Messages through the official `openai` and `anthropic` packages
(versions pinned in requirements.txt), asserting the parsed text and usage.
Exits non-zero on any failure and prints a short summary.
"""

from __future__ import annotations

import sys
import traceback

try:
    import anthropic
    import openai
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"sdk_check: missing package ({exc}); run `make setup`", file=sys.stderr)
    sys.exit(2)

N = 12  # completion tokens asked for with x-sim-completion-tokens
CT = {"x-sim-completion-tokens": str(N)}
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say something about proxies and token metering."},
]


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def eq(actual, expected, what: str) -> None:
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def main(base: str) -> int:
    base = base.rstrip("/")
    oai = openai.OpenAI(base_url=base + "/v1", api_key="sk-sim", max_retries=0, timeout=30)
    ant = anthropic.Anthropic(base_url=base, api_key="sk-ant-sim", max_retries=0, timeout=30)
    results: list[tuple[str, str | None]] = []
    state: dict[str, object] = {}

    def chat_plain() -> None:
        raw = oai.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers=CT
        )
        c = raw.parse()
        prompt = int(raw.headers["x-sim-prompt-tokens"])
        text = c.choices[0].message.content
        check(bool(text), "empty chat text")
        eq(c.object, "chat.completion", "object")
        eq(c.choices[0].finish_reason, "stop", "finish_reason")
        eq(c.usage.completion_tokens, N, "completion_tokens")
        eq(c.usage.prompt_tokens, prompt, "prompt_tokens vs x-sim-prompt-tokens")
        eq(c.usage.total_tokens, prompt + N, "total_tokens")
        eq(c.usage.prompt_tokens_details.cached_tokens, 0, "cached_tokens")
        state["chat_text"] = text

    def chat_stream() -> None:
        stream = oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=CT,
        )
        parts: list[str] = []
        usage = None
        finish = None
        chunks = 0
        for chunk in stream:
            chunks += 1
            if chunk.usage is not None:
                usage = chunk.usage
                eq(chunk.choices, [], "usage chunk choices")
            for ch in chunk.choices:
                if ch.delta.content:
                    parts.append(ch.delta.content)
                if ch.finish_reason:
                    finish = ch.finish_reason
        check(chunks > 3, f"only {chunks} chunks")
        eq("".join(parts), state.get("chat_text"), "streamed text vs plain text")
        eq(finish, "stop", "finish_reason")
        check(usage is not None, "no usage chunk")
        eq(usage.completion_tokens, N, "completion_tokens")

    def chat_length_and_cache() -> None:
        c = oai.chat.completions.create(
            model="gpt-4.1",
            messages=MESSAGES,
            max_completion_tokens=5,
            extra_headers={**CT, "x-sim-cached-tokens": "3"},
        )
        eq(c.choices[0].finish_reason, "length", "finish_reason")
        eq(c.usage.completion_tokens, 5, "completion_tokens")
        eq(c.usage.prompt_tokens_details.cached_tokens, 3, "cached_tokens")

    def chat_rate_limit() -> None:
        try:
            oai.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, extra_headers={"x-sim-status": "429"}
            )
        except openai.RateLimitError as err:
            eq(err.status_code, 429, "status")
            eq(err.code, "rate_limit_exceeded", "error code")
            return
        raise AssertionError("no RateLimitError")

    def legacy_completion() -> None:
        c = oai.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=N, extra_headers=CT
        )
        check(bool(c.choices[0].text), "empty completion text")
        eq(c.usage.completion_tokens, N, "completion_tokens")

    def responses_plain() -> None:
        raw = oai.responses.with_raw_response.create(
            model="gpt-4.1-mini",
            instructions="Be brief.",
            input="Explain token metering in one sentence.",
            extra_headers=CT,
        )
        r = raw.parse()
        check(bool(r.output_text), "empty output_text")
        eq(r.status, "completed", "status")
        eq(r.usage.output_tokens, N, "output_tokens")
        eq(r.usage.input_tokens, int(raw.headers["x-sim-prompt-tokens"]), "input_tokens")
        eq(r.usage.total_tokens, r.usage.input_tokens + N, "total_tokens")
        state["responses_text"] = r.output_text

    def responses_stream() -> None:
        deltas: list[str] = []
        types: list[str] = []
        with oai.responses.stream(
            model="gpt-4.1-mini",
            instructions="Be brief.",
            input="Explain token metering in one sentence.",
            extra_headers=CT,
        ) as stream:
            for event in stream:
                types.append(event.type)
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
            final = stream.get_final_response()
        eq(types[0], "response.created", "first event")
        eq(types[-1], "response.completed", "last event")
        eq("".join(deltas), state.get("responses_text"), "streamed text vs plain text")
        eq(final.output_text, state.get("responses_text"), "final output_text")
        eq(final.usage.output_tokens, N, "output_tokens")

    def responses_create_stream() -> None:
        events = list(
            oai.responses.create(
                model="gpt-5", input=[{"role": "user", "content": "Hi"}], stream=True, extra_headers=CT
            )
        )
        seqs = [e.sequence_number for e in events]
        eq(seqs, list(range(len(events))), "sequence numbers")
        done = events[-1]
        eq(done.type, "response.completed", "last event")
        eq(done.response.usage.output_tokens, N, "output_tokens")

    def anthropic_plain() -> None:
        raw = ant.messages.with_raw_response.create(
            model="claude-sonnet-4-6",
            max_tokens=256,
            system="You are a terse assistant.",
            messages=[{"role": "user", "content": "Say something about proxies."}],
            extra_headers=CT,
        )
        m = raw.parse()
        eq(m.type, "message", "type")
        eq(m.stop_reason, "end_turn", "stop_reason")
        check(bool(m.content[0].text), "empty text")
        eq(m.usage.output_tokens, N, "output_tokens")
        eq(m.usage.input_tokens, int(raw.headers["x-sim-prompt-tokens"]), "input_tokens")
        state["anthropic_text"] = m.content[0].text

    def anthropic_stream() -> None:
        with ant.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=256,
            system="You are a terse assistant.",
            messages=[{"role": "user", "content": "Say something about proxies."}],
            extra_headers=CT,
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        eq(text, state.get("anthropic_text"), "streamed text vs plain text")
        eq(final.content[0].text, text, "final message text")
        eq(final.stop_reason, "end_turn", "stop_reason")
        eq(final.usage.output_tokens, N, "output_tokens")
        check(final.usage.input_tokens > 0, "input_tokens")

    def anthropic_truncated_cached() -> None:
        with ant.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=4,
            messages=[{"role": "user", "content": "Say something about proxies."}],
            extra_headers={**CT, "x-sim-cached-tokens": "5", "x-sim-cache-creation-tokens": "2"},
        ) as stream:
            final = stream.get_final_message()
        eq(final.stop_reason, "max_tokens", "stop_reason")
        eq(final.usage.output_tokens, 4, "output_tokens")
        eq(final.usage.cache_read_input_tokens, 5, "cache_read_input_tokens")
        eq(final.usage.cache_creation_input_tokens, 2, "cache_creation_input_tokens")

    def anthropic_errors() -> None:
        try:
            ant.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=16,
                messages=[{"role": "user", "content": "Hi"}],
                extra_headers={"x-sim-status": "529"},
            )
        except anthropic.APIStatusError as err:
            eq(err.status_code, 529, "status")
            eq(err.body["error"]["type"], "overloaded_error", "error type")
        else:
            raise AssertionError("no APIStatusError for 529")
        try:
            ant.messages.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Hi"}])  # type: ignore[call-arg]
        except TypeError:
            pass  # the SDK itself insists on max_tokens
        except anthropic.BadRequestError as err:
            eq(err.body["error"]["type"], "invalid_request_error", "error type")

    checks = [
        chat_plain,
        chat_stream,
        chat_length_and_cache,
        chat_rate_limit,
        legacy_completion,
        responses_plain,
        responses_stream,
        responses_create_stream,
        anthropic_plain,
        anthropic_stream,
        anthropic_truncated_cached,
        anthropic_errors,
    ]
    for fn in checks:
        try:
            fn()
            results.append((fn.__name__, None))
        except Exception as exc:  # noqa: BLE001 - report every failure
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            results.append((fn.__name__, detail))

    failed = [r for r in results if r[1] is not None]
    for name, err in results:
        print(f"{'ok  ' if err is None else 'FAIL'} {name}" + ("" if err is None else f": {err}"))
    print(f"sdk_check (openai {openai.__version__}, anthropic {anthropic.__version__}): "
          f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
