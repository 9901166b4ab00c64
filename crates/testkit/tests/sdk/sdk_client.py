"""Drives the gateway with the official OpenAI Python SDK and prints what it saw as JSON.

Usage: sdk_client.py BASE_URL SCENARIO [ARGS...]

Scenarios:
  failover COUNT RESET_SECONDS  COUNT requests (streamed and not, alternating), then a
                                wait until the breaker's reset timeout has passed, then
                                10 concurrent requests.
  errors                        requests that the gateway rejects, with the SDK's
                                exception for each.
  read ROUTE...                 one complete and one streamed request per route, with
                                content, finish reason and usage as the SDK parsed them.
"""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai

MESSAGES = [{"role": "user", "content": "Hello"}]


def make_client(base_url):
    # The SDK retries 429 and 5xx responses by itself; turn that off so every request the
    # test counts is one request to the gateway.
    return openai.OpenAI(base_url=base_url, api_key="not-checked", max_retries=0, timeout=30)


def complete(client, stream):
    """Sends one request; returns its status, attempt count, provider and reply text."""
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, stream=stream
    )
    attempts = int(raw.headers["x-adpa-attempts"])
    provider = raw.headers["x-adpa-provider"]
    parsed = raw.parse()
    if stream:
        text = ""
        finish_reason = None
        for chunk in parsed:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish_reason = choice.finish_reason or finish_reason
    else:
        text = parsed.choices[0].message.content
        finish_reason = parsed.choices[0].finish_reason
    return {
        "status": raw.status_code,
        "attempts": attempts,
        "provider": provider,
        "text": text,
        "finish_reason": finish_reason,
        "stream": stream,
    }


def failover(base_url, count, reset_seconds):
    client = make_client(base_url)
    started = time.monotonic()
    first = [complete(client, stream=(index % 2 == 1)) for index in range(count)]
    first_seconds = time.monotonic() - started

    # The breaker opened during the first requests; wait until its reset timeout has
    # passed for sure, then race concurrent requests for the single probe slot.
    time.sleep(max(0.0, reset_seconds + 0.5 - first_seconds))
    with ThreadPoolExecutor(max_workers=10) as pool:
        probes = list(pool.map(lambda i: complete(client, stream=(i % 2 == 1)), range(10)))

    return {"first": first, "first_seconds": first_seconds, "probes": probes}


def errors(base_url):
    client = make_client(base_url)
    seen = {}
    cases = {
        "unknown_route": lambda: client.chat.completions.create(model="no-such-route", messages=MESSAGES),
        "rate_limited": lambda: client.chat.completions.create(model="limited", messages=MESSAGES),
    }
    for name, call in cases.items():
        try:
            call()
            seen[name] = {"exception": None}
        except openai.APIStatusError as error:
            body = error.body if isinstance(error.body, dict) else {}
            seen[name] = {
                "exception": type(error).__name__,
                "status": error.status_code,
                "code": body.get("code"),
                "request_id": body.get("request_id"),
                "attempts": body.get("attempts"),
                "retry_after": error.response.headers.get("retry-after"),
            }
    return seen


def read(base_url, routes):
    client = make_client(base_url)
    seen = {}
    for route in routes:
        reply = client.chat.completions.create(model=route, messages=MESSAGES)
        choice = reply.choices[0]
        complete = {
            "content": choice.message.content,
            "finish_reason": choice.finish_reason,
            "usage": reply.usage.model_dump() if reply.usage else None,
            "object": reply.object,
        }

        text, finish_reason, usage = "", None, None
        for chunk in client.chat.completions.create(
            model=route,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.usage:
                usage = chunk.usage.model_dump()
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish_reason = choice.finish_reason or finish_reason
        streamed = {"content": text, "finish_reason": finish_reason, "usage": usage}
        seen[route] = {"complete": complete, "stream": streamed}
    return seen


def main():
    base_url, scenario = sys.argv[1], sys.argv[2]
    if scenario == "failover":
        result = failover(base_url, int(sys.argv[3]), float(sys.argv[4]))
    elif scenario == "errors":
        result = errors(base_url)
    elif scenario == "read":
        result = read(base_url, sys.argv[3:])
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
