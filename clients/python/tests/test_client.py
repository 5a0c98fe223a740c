"""The SDK against a real scriptbox server, started by tests/cli/python_sdk.rs, which passes
its URL and a tenant's key (SCRIPTBOX_URL, SCRIPTBOX_API_KEY); the tenant may load 3 tools."""

import os
import uuid

import httpx
import pytest

import scriptbox_client as sb

URL = os.environ["SCRIPTBOX_URL"]
KEY = os.environ["SCRIPTBOX_API_KEY"]

TOOL = '''
import time

def add(a, b):
    return a + b

def talk(n):
    print("line", n)
    return {"n": n, "items": list(range(n))}

def boom():
    raise KeyError("missing")

def spin():
    while True:
        pass

def nap(s):
    time.sleep(s)

def hog():
    return len(bytearray(512 * 1024 * 1024))

def chatty(n, pause):
    import sys
    for i in range(n):
        print("line", i, flush=True)
        time.sleep(pause)
    print("bye", file=sys.stderr)
    return n

def chatty_then_spin():
    print("about to spin", flush=True)
    while True:
        pass
'''


@pytest.fixture()
def client():
    with sb.Client(URL, api_key=KEY) as c:
        yield c


def fresh_alias():
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture()
def tool(client):
    client.upload_script("sdk_tool", TOOL)
    alias = fresh_alias()
    client.load("sdk_tool", alias=alias, limits={"fuel": 300_000_000, "deadline_ms": 1500, "memory_bytes": 64 << 20})
    yield alias
    client.unload(alias)


def test_every_route_the_sdk_uses_is_in_the_openapi_document():
    doc = httpx.get(URL + "/openapi.json").json()
    missing = [(m, p) for m, p in sb.ROUTES if m not in doc["paths"].get(p, {})]
    assert missing == []


def test_health(client):
    assert client.health()["status"] == "ok"


def test_upload_load_call(client, tool):
    assert client.call(tool, "add", 2, 3) == 5
    assert client.call(tool, "add", a="x", b="y") == "xy"
    full = client.call_full(tool, "talk", 3)
    assert full.result == {"n": 3, "items": [0, 1, 2]}
    assert full.stdout == "line 3\n"
    assert full.fuel_used > 0 and full.state_reset is False
    assert any(t["alias"] == tool for t in client.tools())
    assert any(s["name"] == "sdk_tool" for s in client.scripts())


def test_tool_errors_are_typed(client, tool):
    with pytest.raises(sb.PythonException) as raised:
        client.call(tool, "boom")
    assert raised.value.type == "KeyError" and "boom" in raised.value.traceback
    assert isinstance(raised.value, sb.ToolError) and raised.value.status == 422
    with pytest.raises(sb.FuelExhausted):
        client.call(tool, "spin")
    with pytest.raises(sb.DeadlineExceeded):
        client.call(tool, "nap", 5)
    with pytest.raises(sb.MemoryLimit):
        client.call(tool, "hog")
    # and the tool answers afterwards (its state reset)
    assert client.call_full(tool, "add", 1, 1).result == 2


def test_refusals_are_typed(client, tool):
    with pytest.raises(sb.NotFound):
        client.call("nobody_here", "add", 1, 2)
    with pytest.raises(sb.SyntaxErrorInScript) as raised:
        client.upload_script("broken", "def (:\n")
    assert raised.value.code == "syntax_error"
    with pytest.raises(sb.AuthError):
        sb.Client(URL, api_key="wrong-key-0123456789").tools()
    with pytest.raises(sb.ConnectionFailed):
        sb.Client("http://127.0.0.1:1", api_key=KEY).health()
    # the tenant may load 3 tools: `tool` is one
    extra = [fresh_alias(), fresh_alias()]
    for alias in extra:
        client.load("sdk_tool", alias=alias)
    try:
        with pytest.raises(sb.QuotaExceeded) as raised:
            client.load("sdk_tool", alias=fresh_alias())
        assert raised.value.code == "too_many_tools"
    finally:
        for alias in extra:
            client.unload(alias)


def test_execute(client):
    answer = client.execute("print('hi')\nresult = sum(args)", args=[1, 2, 3])
    assert answer["result"] == 6 and answer["stdout"] == "hi\n"
    with pytest.raises(sb.PythonException) as raised:
        client.execute("1/0")
    assert "ZeroDivisionError" in str(raised.value)


def test_on_stdout_streams_the_output_while_the_call_runs(client, tool):
    import time

    heard, errs = [], []
    started = time.monotonic()
    full = client.call_full(tool, "chatty", 3, 0.3,
                            on_stdout=lambda t: heard.append((t, time.monotonic())),
                            on_stderr=errs.append)
    answered = time.monotonic()
    assert full.result == 3
    assert "".join(t for t, _ in heard) == "line 0\nline 1\nline 2\n" == full.stdout
    assert "".join(errs) == "bye\n" == full.stderr
    # the first line came while the tool still had most of its 0.9 s ahead
    assert answered - heard[0][1] > 0.5, (started, heard, answered)
    assert client.call(tool, "add", 2, 3, on_stdout=heard.append) == 5


def test_a_streamed_call_raises_the_same_typed_errors(client, tool):
    heard = []
    with pytest.raises(sb.FuelExhausted) as raised:
        client.call(tool, "chatty_then_spin", on_stdout=heard.append)
    assert "".join(heard) == "about to spin\n"
    assert raised.value.code == "fuel_exhausted" and raised.value.status == 422
    with pytest.raises(sb.PythonException):
        client.call(tool, "boom", on_stdout=heard.append)
    with pytest.raises(sb.NotFound) as missing:
        client.call("no_such_alias", "f", on_stdout=heard.append)
    assert missing.value.status == 404


def test_execute_streams_too(client):
    heard = []
    answer = client.execute("print('hi')\nresult = sum(args)", args=[1, 2], on_stdout=heard.append)
    # pieces are cut where the guest's writes and the 25 ms flushes fall: join them
    assert answer["result"] == 3 and "".join(heard) == "hi\n"
    with pytest.raises(sb.PythonException):
        client.execute("print('x')\n1/0", on_stdout=heard.append)
    assert "".join(heard) == "hi\nx\n"


def test_tasks(client, tool):
    task_id = client.submit_task(
        "sdk-sum",
        [
            {"id": "a", "kind": "call", "alias": tool, "function_name": "add", "args": [1, 2]},
            {"id": "b", "kind": "call", "alias": tool, "function_name": "add", "args": [3, 4], "depends_on": ["a"]},
        ],
    )
    record = client.wait_task(task_id)
    assert record["status"] == "succeeded"
    assert [s["result"] for s in record["steps"]] == [3, 7]
    assert any(t["task_id"] == task_id for t in client.tasks())
