"""The MCP endpoint driven by the official MCP Python SDK (`mcp`, its streamable-HTTP client):
list -> call -> a limit hit -> bad input -> concurrency -> cancel, with the tenant's key."""

import os
import uuid

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import scriptbox_client as sb

URL = os.environ["SCRIPTBOX_URL"]
KEY = os.environ["SCRIPTBOX_API_KEY"]

TOOL = '''
import time

def add(a: int, b: int = 2) -> int:
    """Adds two integers."""
    return a + b

def scale(values: list[float], factor: float) -> list[float]:
    return [v * factor for v in values]

def spin():
    while True:
        pass

def nap(s: float) -> float:
    time.sleep(s)
    return s
'''


def session(key=KEY):
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
    return streamable_http_client(URL + "/mcp", http_client=client)


@pytest.fixture(scope="module")
def alias():
    alias = "mcp" + uuid.uuid4().hex[:6]
    with sb.Client(URL, api_key=KEY) as box:
        box.upload_script("mcp_tool", TOOL)
        box.load("mcp_tool", alias=alias, limits={"fuel": 300_000_000, "deadline_ms": 9_000})
        yield alias
        box.unload(alias)


def run(coroutine):
    return anyio.run(coroutine)


def test_list_call_limit_and_bad_input(alias):
    async def go():
        async with session() as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                tools = {t.name: t for t in (await s.list_tools()).tools}
                add = tools[f"{alias}.add"]
                assert add.description == "Adds two integers."
                assert add.input_schema["properties"]["a"] == {"type": "integer"}
                assert add.input_schema["properties"]["b"] == {"type": "integer", "default": 2}
                assert add.input_schema["required"] == ["a"]
                assert add.output_schema["properties"]["result"] == {"type": "integer"}
                scale = tools[f"{alias}.scale"].input_schema
                assert scale["properties"]["values"] == {"type": "array", "items": {"type": "number"}}
                assert "run_python" in tools

                done = await s.call_tool(f"{alias}.add", {"a": 40})
                assert not done.is_error
                assert done.structured_content == {"result": 42}
                done = await s.call_tool("run_python", {"code": "sum(args)", "args": [1, 2, 3]})
                assert not done.is_error and done.structured_content == {"result": 6}

                hit = await s.call_tool(f"{alias}.spin", {})
                assert hit.is_error and hit.content[0].text.startswith("fuel")
                bad = await s.call_tool(f"{alias}.add", {"b": 1})
                assert bad.is_error and "'a'" in bad.content[0].text
                unknown = await s.call_tool("nobody.nothing", {})
                assert unknown.is_error
                # and the tool answers after all of it
                done = await s.call_tool(f"{alias}.add", {"a": 1, "b": 1})
                assert done.structured_content == {"result": 2}

    run(go)


def test_concurrent_calls_in_one_session_and_across_sessions(alias):
    async def go():
        results = []

        async def one_session(n):
            async with session() as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    async with anyio.create_task_group() as tg:
                        for i in range(3):
                            async def call(i=i):
                                r = await s.call_tool("run_python", {"code": f"{n} * 10 + {i}"})
                                results.append(r.structured_content["result"])
                            tg.start_soon(call)

        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(one_session, n)
        assert sorted(results) == sorted(n * 10 + i for n in range(3) for i in range(3))

    run(go)


def test_cancelling_a_call_stops_it(alias):
    async def go():
        async with session() as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                started = anyio.current_time()
                with anyio.move_on_after(1):
                    await s.call_tool(f"{alias}.nap", {"s": 8})
                assert anyio.current_time() - started < 3
                # the tool is free again well before the nap would have ended
                done = await s.call_tool(f"{alias}.add", {"a": 2})
                assert done.structured_content == {"result": 4}
                assert anyio.current_time() - started < 6

    run(go)


def test_a_wrong_key_is_refused():
    r = httpx2.post(URL + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                    headers={"Authorization": "Bearer wrong-key-0123456789",
                             "Accept": "application/json, text/event-stream"})
    assert r.status_code == 401
    r = httpx2.post(URL + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                    headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401


HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def open_session(key):
    r = httpx2.post(URL + "/mcp", json=INIT, headers={**HEADERS, "X-API-Key": key})
    assert r.status_code == 200, r.text
    return r.headers["mcp-session-id"]


def list_in(session_id, key):
    return httpx2.post(URL + "/mcp", json=LIST,
                       headers={**HEADERS, "X-API-Key": key, "Mcp-Session-Id": session_id})


def test_a_session_belongs_to_its_tenant_and_sessions_are_bounded():
    other = os.environ["SCRIPTBOX_OTHER_KEY"]
    mine = open_session(KEY)
    assert list_in(mine, other).status_code == 404
    assert list_in(mine, KEY).status_code != 404
    # a flood: past 32 sessions the tenant's oldest are closed
    opened = [open_session(other) for _ in range(34)]
    assert list_in(opened[0], other).status_code == 404
    assert list_in(opened[-1], other).status_code == 200
    # the first tenant's session is untouched by the other's flood
    assert list_in(mine, KEY).status_code == 200
