"""Drives the metering gateway with the official provider SDKs, as a client would.

The gateway's end-to-end tests (tests/common/sdk.rs) run this with the python of
the environment hack/tools/sdk-venv.sh makes (openai, anthropic and payi pinned in
hack/tools/sdk/requirements.txt):

    GATEWAY_URL=http://127.0.0.1:PORT PAYI_API_KEY=... python drive.py SCENARIO

Input, all through the environment but the scenario:
    GATEWAY_URL   the gateway's root, e.g. http://127.0.0.1:8080 (a trailing / is dropped)
    PAYI_API_KEY  the key the client presents (not needed by `list` and `openai-wrong-key`)
    USE_CASE      optional: the use case name, sent by the payi-* scenarios as xProxy-UseCase-Name
    USER_ID       optional: the user id, sent by the payi-* scenarios as xProxy-User-ID
    BAD_KEY       optional: the key `openai-wrong-key` presents (default "payi-not-a-key")
    MODEL         optional: overrides the scenario's model (or the Azure deployment)
    SDK_TIMEOUT   optional: seconds per request (default 20); no client retries (max_retries=0)
    SDK_DEBUG     optional: 1 logs the SDKs' HTTP traffic to stderr

Output: ONE JSON object on stdout, e.g.
    {"scenario": "openai-chat", "ok": true, "status": 200, "headers": {...},
     "model": "gpt-4o-mini", "text": "Hello", "usage": {...}, "xproxy_result": null}
Streaming scenarios add what the SDK yielded: chat "chunks", "empty_choice_chunks"
(chunks with choices: [], i.e. usage chunks), "usage_chunks" (usage not null) and
"usage" (the last non-null one); responses "events", "event_types" and the usage
of response.completed; anthropic "events", "event_types" (the raw SSE types plus
the SDK's own "text" events), "delta_usage" (message_delta's) and "usage" (of
get_final_message()). Embeddings report "embeddings" and "dimensions" (the SDK
asks for encoding_format "base64" and decodes it). An HTTP
error answer (openai/anthropic APIStatusError) or an error event inside a stream is
reported, exit 0:
    {"ok": false, "error": {"status": 401, "type": "AuthenticationError",
     "message": "...", "body": <the response body, parsed JSON or text>,
     "sdk_body": <the SDK's e.body>, "headers": {...}, "during_stream": false}}
An error event inside a stream has "during_stream": true, "status": null (the
stream's own 200 is the top-level "status") and "body" the event's data; what had
arrived before it (chunks, text, ...) is kept. The SDK's e.body is not always the
whole body: openai's is the body's "error" member when there is one.
`usage`, `xproxy_result` and the like are the wire's fields as the SDK parsed them
(pydantic's model_dump(exclude_unset=True): only the keys that were on the wire).
Anything else (connection refused, a timeout, a bug here) exits non-zero with a
traceback on stderr.

The gateway's URL layout, which the scenarios' clients are configured for (the SDK
joins its base_url with its own resource path):

  scenario                   client                                               request
  openai-chat                OpenAI(base_url=GW/openai/v1, api_key=KEY)           POST /openai/v1/chat/completions
  openai-chat-stream           same, stream=True (no stream_options)              POST /openai/v1/chat/completions
  openai-chat-stream-usage     same, stream_options={"include_usage": true}       POST /openai/v1/chat/completions
  openai-embeddings            same, text-embedding-3-small                       POST /openai/v1/embeddings
  openai-responses             same                                               POST /openai/v1/responses
  openai-responses-stream      same, stream=True                                  POST /openai/v1/responses
  openai-completions           same (legacy completions)                          POST /openai/v1/completions
  openai-wrong-key             same, api_key=BAD_KEY; expects 401                 POST /openai/v1/chat/completions
  anthropic-messages         Anthropic(base_url=GW/anthropic, api_key=KEY)        POST /anthropic/v1/messages
  anthropic-messages-stream    same, client.messages.stream(...)                  POST /anthropic/v1/messages
  azure-chat                 AzureOpenAI(azure_endpoint=GW/azure.openai, KEY,      POST /azure.openai/openai/deployments/gpt-4o/
                               api_version="2024-10-21"), deployment gpt-4o            chat/completions?api-version=2024-10-21
  payi-openai                Pay-i's proxy set-up (PAYI_BASE_URL=GW):             POST /api/v1/proxy/openai/v1/chat/completions
                               OpenAI(api_key="sk-not-used", base_url=payi_openai_url(),
                               default_headers={"xProxy-api-key": KEY}),
                               extra_headers=create_headers(use_case_name=USE_CASE, user_id=USER_ID)
  payi-openai-stream           same, stream=True                                  POST /api/v1/proxy/openai/v1/chat/completions
  payi-anthropic             Anthropic(api_key="sk-ant-not-used",                 POST /api/v1/proxy/anthropic/v1/messages
                               base_url=payi_anthropic_url(),
                               default_headers={PayiHeaderNames.api_key: KEY}), same extra_headers
  payi-anthropic-stream        same, client.messages.stream(...)                  POST /api/v1/proxy/anthropic/v1/messages
  list                       none: prints the installed SDK versions              (no request)

The key travels as each SDK sends its api_key (seen on the wire with the pinned
versions): OpenAI `Authorization: Bearer KEY`; Azure `api-key: KEY`; Anthropic
`Authorization: Bearer KEY` too (anthropic 2.17 sends api_key so; older releases
sent X-Api-Key), with `anthropic-version: 2026-10-21`. In the payi-*
scenarios the provider key is a dummy (`Authorization: Bearer sk-not-used` /
`sk-ant-not-used`) and the Pay-i key is `xProxy-api-key` (OpenAI, as Pay-i's
quickstart README spells it) or `xProxy-Api-Key` (Anthropic,
PayiHeaderNames.api_key); USE_CASE and USER_ID go as `xProxy-UseCase-Name` and
`xProxy-User-ID`. Header names are case-insensitive.
"""

import json
import os
import sys

# The SDKs read these when an argument is missing (OPENAI_ORG_ID, for one, adds an
# OpenAI-Organization header), and httpx follows proxy variables: none of them may
# change what the tests send to a gateway on loopback.
for _name in list(os.environ):
    if _name.startswith(("OPENAI_", "AZURE_OPENAI_", "ANTHROPIC_")) or _name in (
        "PAYI_BASE_URL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        del os.environ[_name]

if os.environ.get("SDK_DEBUG") == "1":
    import logging

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

PROMPT = "Say hello in one word."
MAX_TOKENS = 16


def env(name, default=None):
    value = os.environ.get(name, "")
    if value:
        return value
    if default is None:
        sys.exit(f"drive.py: {name} is not set")
    return default


def gateway():
    return env("GATEWAY_URL").rstrip("/")


def key():
    return env("PAYI_API_KEY")


def timeout():
    return float(env("SDK_TIMEOUT", "20"))


def model(default):
    return env("MODEL", default)


def dump(obj):
    """A pydantic model as the JSON the wire carried (unset keys left out)."""
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_unset=True)
    return obj


def extra(obj, name):
    """A field outside the SDK's schema (e.g. Pay-i's xproxy_result), or None."""
    extras = getattr(obj, "model_extra", None) or {}
    value = extras.get(name)
    return dump(value) if hasattr(value, "model_dump") else value


def headers_of(response):
    return {k.lower(): v for k, v in response.headers.items()}


# --- clients ----------------------------------------------------------------


# Each SDK is imported only by the scenarios that use it: anthropic alone takes a
# second to import.


def openai_client(api_key=None):
    import openai

    return openai.OpenAI(
        base_url=gateway() + "/openai/v1",
        api_key=api_key if api_key is not None else key(),
        max_retries=0,
        timeout=timeout(),
    )


def anthropic_client():
    import anthropic

    return anthropic.Anthropic(
        base_url=gateway() + "/anthropic", api_key=key(), max_retries=0, timeout=timeout()
    )


def azure_client():
    import openai

    return openai.AzureOpenAI(
        azure_endpoint=gateway() + "/azure.openai",
        api_key=key(),
        api_version="2024-10-21",
        max_retries=0,
        timeout=timeout(),
    )


def payi_headers():
    """Per-request Pay-i headers, exactly as the payi SDK builds them."""
    from payi.lib.helpers import create_headers

    kwargs = {}
    if os.environ.get("USE_CASE"):
        kwargs["use_case_name"] = os.environ["USE_CASE"]
    if os.environ.get("USER_ID"):
        kwargs["user_id"] = os.environ["USER_ID"]
    return create_headers(**kwargs)


def payi_openai_client():
    os.environ["PAYI_BASE_URL"] = gateway()
    import openai
    from payi.lib.helpers import payi_openai_url

    return openai.OpenAI(
        api_key="sk-not-used",
        base_url=payi_openai_url(),
        default_headers={"xProxy-api-key": key()},
        max_retries=0,
        timeout=timeout(),
    )


def payi_anthropic_client():
    os.environ["PAYI_BASE_URL"] = gateway()
    import anthropic
    from payi.lib.helpers import PayiHeaderNames, payi_anthropic_url

    return anthropic.Anthropic(
        api_key="sk-ant-not-used",
        base_url=payi_anthropic_url(),
        default_headers={PayiHeaderNames.api_key: key()},
        max_retries=0,
        timeout=timeout(),
    )


# --- calls ------------------------------------------------------------------
# Each writes what it learns into `out` as it goes, so an error part-way through a
# stream is reported with what had arrived before it.


def chat(out, client, default_model, extra_headers=None):
    raw = client.chat.completions.with_raw_response.create(
        model=model(default_model),
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        extra_headers=extra_headers,
    )
    out.update(status=raw.status_code, headers=headers_of(raw))
    response = raw.parse()
    choice = response.choices[0] if response.choices else None
    out.update(
        model=response.model,
        text=choice.message.content if choice else None,
        finish_reason=choice.finish_reason if choice else None,
        usage=dump(response.usage),
        xproxy_result=extra(response, "xproxy_result"),
    )


def chat_stream(out, client, default_model, include_usage=False, extra_headers=None):
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = client.chat.completions.with_raw_response.create(
        model=model(default_model),
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        stream=True,
        extra_headers=extra_headers,
        **kwargs,
    )
    out.update(status=raw.status_code, headers=headers_of(raw))
    out.update(
        chunks=0,
        empty_choice_chunks=0,
        usage_chunks=0,
        text="",
        usage=None,
        model=None,
        finish_reason=None,
        xproxy_result=None,
    )
    for chunk in raw.parse():
        out["chunks"] += 1
        out["model"] = chunk.model or out["model"]
        if not chunk.choices:
            out["empty_choice_chunks"] += 1
        for choice in chunk.choices:
            out["text"] += (choice.delta.content or "") if choice.delta else ""
            out["finish_reason"] = choice.finish_reason or out["finish_reason"]
        if chunk.usage is not None:
            out["usage_chunks"] += 1
            out["usage"] = dump(chunk.usage)
        out["xproxy_result"] = extra(chunk, "xproxy_result") or out["xproxy_result"]


def embeddings(out, client):
    raw = client.embeddings.with_raw_response.create(
        model=model("text-embedding-3-small"), input="hello world"
    )
    out.update(status=raw.status_code, headers=headers_of(raw))
    response = raw.parse()
    out.update(
        model=response.model,
        embeddings=len(response.data),
        dimensions=len(response.data[0].embedding) if response.data else 0,
        usage=dump(response.usage),
        xproxy_result=extra(response, "xproxy_result"),
    )


def responses(out, client):
    raw = client.responses.with_raw_response.create(
        model=model("gpt-4o-mini"), input=PROMPT, max_output_tokens=MAX_TOKENS
    )
    out.update(status=raw.status_code, headers=headers_of(raw))
    response = raw.parse()
    out.update(
        model=response.model,
        text=response.output_text,
        response_status=response.status,
        usage=dump(response.usage),
        xproxy_result=extra(response, "xproxy_result"),
    )


def responses_stream(out, client):
    raw = client.responses.with_raw_response.create(
        model=model("gpt-4o-mini"), input=PROMPT, max_output_tokens=MAX_TOKENS, stream=True
    )
    out.update(status=raw.status_code, headers=headers_of(raw))
    out.update(events=0, event_types=[], text="", usage=None, model=None, response_status=None)
    for event in raw.parse():
        out["events"] += 1
        out["event_types"].append(event.type)
        if event.type == "response.output_text.delta":
            out["text"] += event.delta
        elif event.type in ("response.completed", "response.incomplete", "response.failed"):
            out.update(
                model=event.response.model,
                response_status=event.response.status,
                usage=dump(event.response.usage),
            )
            out["xproxy_result"] = extra(event, "xproxy_result") or extra(
                event.response, "xproxy_result"
            )


def completions(out, client):
    raw = client.completions.with_raw_response.create(
        model=model("gpt-4o-mini"), prompt=PROMPT, max_tokens=MAX_TOKENS
    )
    out.update(status=raw.status_code, headers=headers_of(raw))
    response = raw.parse()
    out.update(
        model=response.model,
        text=response.choices[0].text if response.choices else None,
        usage=dump(response.usage),
        xproxy_result=extra(response, "xproxy_result"),
    )


def messages(out, client, extra_headers=None):
    raw = client.messages.with_raw_response.create(
        model=model("claude-sonnet-4-5"),
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers=extra_headers,
    )
    out.update(status=raw.status_code, headers=headers_of(raw))
    message = raw.parse()
    out.update(
        model=message.model,
        text="".join(b.text for b in message.content if b.type == "text"),
        stop_reason=message.stop_reason,
        usage=dump(message.usage),
        xproxy_result=extra(message, "xproxy_result"),
    )


def messages_stream(out, client, extra_headers=None):
    with client.messages.stream(
        model=model("claude-sonnet-4-5"),
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers=extra_headers,
    ) as stream:
        out.update(status=stream.response.status_code, headers=headers_of(stream.response))
        out.update(events=0, event_types=[], xproxy_result=None)
        for event in stream:
            out["events"] += 1
            out["event_types"].append(event.type)
            if event.type == "message_delta":
                out["delta_usage"] = dump(event.usage)
                out["xproxy_result"] = extra(event, "xproxy_result") or out["xproxy_result"]
        message = stream.get_final_message()
    out.update(
        model=message.model,
        text="".join(b.text for b in message.content if b.type == "text"),
        stop_reason=message.stop_reason,
        usage=dump(message.usage),
    )


def versions(out):
    from importlib.metadata import version

    out["versions"] = {name: version(name) for name in ("openai", "anthropic", "payi")}
    out["python"] = sys.version.split()[0]


SCENARIOS = {
    "openai-chat": lambda out: chat(out, openai_client(), "gpt-4o-mini"),
    "openai-chat-stream": lambda out: chat_stream(out, openai_client(), "gpt-4o-mini"),
    "openai-chat-stream-usage": lambda out: chat_stream(
        out, openai_client(), "gpt-4o-mini", include_usage=True
    ),
    "openai-embeddings": lambda out: embeddings(out, openai_client()),
    "openai-responses": lambda out: responses(out, openai_client()),
    "openai-responses-stream": lambda out: responses_stream(out, openai_client()),
    "openai-completions": lambda out: completions(out, openai_client()),
    "openai-wrong-key": lambda out: chat(
        out, openai_client(api_key=env("BAD_KEY", "payi-not-a-key")), "gpt-4o-mini"
    ),
    "anthropic-messages": lambda out: messages(out, anthropic_client()),
    "anthropic-messages-stream": lambda out: messages_stream(out, anthropic_client()),
    "azure-chat": lambda out: chat(out, azure_client(), "gpt-4o"),
    "payi-openai": lambda out: chat(
        out, payi_openai_client(), "gpt-4o-mini", extra_headers=payi_headers()
    ),
    "payi-openai-stream": lambda out: chat_stream(
        out, payi_openai_client(), "gpt-4o-mini", extra_headers=payi_headers()
    ),
    "payi-anthropic": lambda out: messages(
        out, payi_anthropic_client(), extra_headers=payi_headers()
    ),
    "payi-anthropic-stream": lambda out: messages_stream(
        out, payi_anthropic_client(), extra_headers=payi_headers()
    ),
    "list": versions,
}


def sdk_errors(name):
    """An exception class of each SDK this run imported, e.g. ("APIError",)."""
    return tuple(getattr(sys.modules[m], name) for m in ("openai", "anthropic") if m in sys.modules)


def error_report(e, out):
    report = {"status": None, "type": type(e).__name__, "message": str(e)}
    report["sdk_body"] = getattr(e, "body", None)
    report["body"] = report["sdk_body"]
    # An error event inside a stream that had answered 200 (out["status"]): no
    # status of its own, and its body is the event's data.
    report["during_stream"] = "chunks" in out or "events" in out
    response = getattr(e, "response", None)
    if isinstance(e, sdk_errors("APIStatusError")) and not report["during_stream"]:
        report["status"] = response.status_code
        report["headers"] = headers_of(response)
        try:
            report["body"] = json.loads(response.text)
        except ValueError:
            report["body"] = response.text
    return report


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        sys.exit(f"usage: drive.py SCENARIO, one of: {', '.join(SCENARIOS)}")
    scenario = sys.argv[1]
    out = {"scenario": scenario, "ok": True}
    try:
        SCENARIOS[scenario](out)
    except Exception as e:
        # An HTTP error answer, or an error event inside a stream, is a result; no
        # answer at all (refused, reset, timed out) or anything else is not.
        if isinstance(e, sdk_errors("APIConnectionError")) or not isinstance(e, sdk_errors("APIError")):
            raise
        out["ok"] = False
        out["error"] = error_report(e, out)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
