"""GET /metrics read with prometheus_client's text parser (the format Prometheus scrapes),
against the real server started by tests/cli/python_sdk.rs; SCRIPTBOX_ADMIN_KEY is an
administrator's key."""

import os
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

URL = os.environ["SCRIPTBOX_URL"]
KEY = os.environ["SCRIPTBOX_API_KEY"]
ADMIN = os.environ["SCRIPTBOX_ADMIN_KEY"]

TOOL = "def add(a, b):\n    return a + b\n\ndef boom():\n    raise ValueError('no')\n"


def scrape():
    response = httpx.get(URL + "/metrics", headers={"X-API-Key": ADMIN})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return list(text_string_to_metric_families(response.text))


def sample(families, name, **labels):
    for family in families:
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_metrics_parse_and_count_exactly_the_calls_made():
    name = "m" + uuid.uuid4().hex[:8]
    headers = {"X-API-Key": KEY}
    with httpx.Client(base_url=URL, headers=headers) as client:
        put = client.put(f"/scripts/{name}", content=TOOL, headers={"content-type": "text/x-python"})
        assert put.status_code in (200, 201), put.text
        load = client.post("/python/load", json={"script_name": name, "alias": name})
        assert load.status_code == 200, load.text
        try:
            before = scrape()
            for i in range(7):
                r = client.post("/python/call", json={"alias": name, "function_name": "add", "args": [i, 1]})
                assert r.status_code == 200, r.text
            for _ in range(2):
                client.post("/python/call", json={"alias": name, "function_name": "boom"})
            after = scrape()
        finally:
            client.post("/python/unload", json={"alias": name})
            client.delete(f"/scripts/{name}")
    labels = {"tenant": "sdk", "tool": name}
    assert sample(after, "scriptbox_calls_total", outcome="ok", **labels) - sample(
        before, "scriptbox_calls_total", outcome="ok", **labels
    ) == 7
    assert sample(after, "scriptbox_calls_total", outcome="error", **labels) - sample(
        before, "scriptbox_calls_total", outcome="error", **labels
    ) == 2
    route = {"route": "/python/call", "status": "200"}
    assert sample(after, "scriptbox_http_requests_total", **route) - sample(
        before, "scriptbox_http_requests_total", **route
    ) == 7
    # every family has a type, and the histograms their buckets
    kinds = {f.name: f.type for f in after}
    assert kinds["scriptbox_call_duration_seconds"] == "histogram"
    assert kinds["scriptbox_calls"] == "counter"
    assert kinds["scriptbox_tools_loaded"] == "gauge"
    assert sample(after, "scriptbox_call_duration_seconds_count", mode="persistent") >= 9
    assert sample(after, "scriptbox_images", state="ready") + sample(
        after, "scriptbox_images", state="preparing"
    ) + sample(after, "scriptbox_images", state="off") + sample(after, "scriptbox_images", state="failed") == 1


def test_metrics_need_the_admin_role():
    response = httpx.get(URL + "/metrics", headers={"X-API-Key": KEY})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert httpx.get(URL + "/metrics").status_code == 401
