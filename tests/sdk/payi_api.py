"""Drives Pay-i's own API on the gateway (docs/payi-api.md) with the pinned `payi` SDK.

Run by tests/e2e_payi_api.rs with the python of hack/tools/sdk-venv.sh:

    GATEWAY_URL=http://127.0.0.1:PORT PAYI_API_KEY=... python payi_api.py SCENARIO

Scenarios:
  instrumented-openai  Pay-i's instrumented set-up, as its README shows it: PAYI_BASE_URL is the
                       gateway, payi_instrument() (defaults), and a function decorated with
                       @track(use_case_name=USE_CASE, user_id=USER_ID) that calls the provider
                       DIRECTLY with the openai SDK (OpenAI(base_url=SIM_URL/v1), no gateway in the
                       path); the instrumentation then reports the usage with POST /api/v1/ingest.
                       Prints the completion's id, model and usage, and the instrumentation's
                       last result (payi.lib.instrument.get_context()["last_result"]).
  instrumented-anthropic  the same with the anthropic SDK (Anthropic(base_url=SIM_URL)), claude-sonnet-4-5.
  call                 One client method: CALL is JSON {"method": "ingest.units", "kwargs": {...}}
                       (a dotted path on payi.Payi(), e.g. "requests.request_id.result.retrieve";
                       "args" for positional arguments). Prints what it returned; for a list,
                       every item of every page (the SDK follows the cursor) and the first cursor.

Input (environment): GATEWAY_URL, PAYI_API_KEY, and per scenario SIM_URL, USE_CASE, USER_ID,
MODEL (default gpt-4o-mini), CALL. No client retries (max_retries=0): what the gateway answered
is what is printed.

Output: ONE JSON object on stdout: {"ok": true, "result": <model_dump>, ...}, or for an HTTP
error answer {"ok": false, "error": {"status", "body"}} (exit 0). Anything else exits non-zero.
"""

import json
import os
import sys


def env(name, default=None):
    value = os.environ.get(name, "")
    return value if value else default


def dump(obj):
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return obj


def client():
    from payi import Payi

    return Payi(base_url=env("GATEWAY_URL").rstrip("/"), api_key=env("PAYI_API_KEY"), max_retries=0, timeout=20)


def instrumented_openai(out):
    from openai import OpenAI
    from payi.lib.instrument import get_context, payi_instrument, track

    # Pay-i's instrumented set-up reads PAYI_BASE_URL and PAYI_API_KEY from the
    # environment (the key Secret's envFrom); the test sets the first here.
    os.environ["PAYI_BASE_URL"] = env("GATEWAY_URL").rstrip("/")
    payi_instrument()
    provider = OpenAI(base_url=env("SIM_URL").rstrip("/") + "/v1", api_key="sk-direct-to-provider", max_retries=0)

    @track(use_case_name=env("USE_CASE"), user_id=env("USER_ID"))
    def ask():
        return provider.chat.completions.create(
            model=env("MODEL", "gpt-4o-mini"),
            messages=[{"role": "user", "content": "Say hello from the instrumented set-up"}],
        )

    completion = ask()
    out["response_id"] = completion.id
    out["model"] = completion.model
    out["usage"] = dump(completion.usage)
    out["last_result"] = dump(get_context().get("last_result"))
    out["ok"] = True


def instrumented_anthropic(out):
    from anthropic import Anthropic
    from payi.lib.instrument import get_context, payi_instrument, track

    os.environ["PAYI_BASE_URL"] = env("GATEWAY_URL").rstrip("/")
    payi_instrument()
    provider = Anthropic(base_url=env("SIM_URL").rstrip("/"), api_key="sk-ant-direct-to-provider", max_retries=0)

    @track(use_case_name=env("USE_CASE"), user_id=env("USER_ID"))
    def ask():
        return provider.messages.create(
            model=env("MODEL", "claude-sonnet-4-5"),
            max_tokens=64,
            messages=[{"role": "user", "content": "Say hello from the instrumented set-up"}],
        )

    message = ask()
    out["response_id"] = message.id
    out["model"] = message.model
    out["usage"] = dump(message.usage)
    out["last_result"] = dump(get_context().get("last_result"))
    out["ok"] = True


def call(out):
    spec = json.loads(env("CALL"))
    target = client()
    for part in spec["method"].split("."):
        target = getattr(target, part)
    result = target(*spec.get("args", []), **spec.get("kwargs", {}))
    if hasattr(result, "_get_page_items"):
        # A list: every item of every page, as the SDK's auto-pagination follows the cursor.
        out["result"] = {"items": [dump(item) for item in result], "first_page_cursor": result.cursor}
    else:
        out["result"] = dump(result)
    out["ok"] = True


SCENARIOS = {"instrumented-openai": instrumented_openai, "instrumented-anthropic": instrumented_anthropic, "call": call}


def main():
    import payi

    scenario = sys.argv[1] if len(sys.argv) > 1 else ""
    if scenario not in SCENARIOS:
        sys.exit(f"unknown scenario {scenario!r}; one of {sorted(SCENARIOS)}")
    out = {"scenario": scenario}
    try:
        SCENARIOS[scenario](out)
    except payi.APIStatusError as e:
        try:
            body = e.response.json()
        except ValueError:
            body = e.response.text
        out["ok"] = False
        out["error"] = {"status": e.status_code, "body": body}
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
