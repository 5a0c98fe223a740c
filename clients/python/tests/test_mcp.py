"""The MCP endpoint driven by the official MCP Python SDK (`mcp`, its streamable-HTTP client):
list -> call -> a limit hit -> bad input -> concurrency -> cancel -> progress -> list_changed,
with the tenant's key."""

import os
import uuid

import functools

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.types import ToolListChangedNotification
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

def talk(n: int) -> int:
    import sys
    for i in range(n):
        print("line", i, flush=True)
        time.sleep(0.3)
    print("done", file=sys.stderr, flush=True)
    return n
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


def test_progress_notifications_carry_the_output_while_the_call_runs(alias):
    async def go():
        async with session() as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                heard = []

                async def on_progress(progress, total, message):
                    heard.append((progress, message, anyio.current_time()))

                done = await s.call_tool(f"{alias}.talk", {"n": 3}, progress_callback=on_progress)
                answered = anyio.current_time()
                assert done.structured_content == {"result": 3}
                # pieces are cut where the guest's writes and the 25 ms flushes fall: join them
                stdout = "".join(m for _, m, _ in heard if not m.startswith("[stderr] "))
                assert stdout == "line 0\nline 1\nline 2\n"
                stderr = "".join(m[len("[stderr] "):] for _, m, _ in heard if m.startswith("[stderr] "))
                assert stderr == "done\n"
                assert [p for p, _, _ in heard] == list(range(1, len(heard) + 1))
                # the first line arrived while the guest still had 0.9 s of work ahead
                assert answered - heard[0][2] > 0.5
                # without a progress token: no progress, the same answer
                plain = await s.call_tool(f"{alias}.talk", {"n": 1})
                assert plain.structured_content == {"result": 1}
                assert "line 0" in plain.content[1].text

    run(go)


async def load_other_tool(box, name):
    """Uploads a one-function script `name` and loads it (off the event loop); its alias."""
    box.upload_script(name, "def f() -> int:\n    return 1\n")
    alias = "lc" + uuid.uuid4().hex[:6]
    await anyio.to_thread.run_sync(functools.partial(box.load, name, alias=alias))
    return alias


def test_a_session_hears_tools_list_changed_on_load_and_unload():
    async def go():
        changed = anyio.Event()
        heard = []

        async def on_message(message):
            if isinstance(message, ToolListChangedNotification):
                heard.append(message)
                changed.set()

        async with session() as (read, write):
            async with ClientSession(read, write, message_handler=on_message) as s:
                await s.initialize()
                # the client opens its GET stream after the handshake; changes go out on it
                await anyio.sleep(1)
                with sb.Client(URL, api_key=KEY) as box:
                    alias = await load_other_tool(box, "lc_tool")
                    with anyio.fail_after(5):
                        await changed.wait()
                    names = [t.name for t in (await s.list_tools()).tools]
                    assert f"{alias}.f" in names
                    changed = anyio.Event()
                    await anyio.to_thread.run_sync(box.unload, alias)
                    with anyio.fail_after(5):
                        await changed.wait()
                    names = [t.name for t in (await s.list_tools()).tools]
                    assert f"{alias}.f" not in names
                    assert len(heard) == 2
                    # another tenant's load is not this session's change
                    with sb.Client(URL, api_key=os.environ["SCRIPTBOX_OTHER_KEY"]) as theirs:
                        their_alias = await load_other_tool(theirs, "lc_other")
                        await anyio.sleep(0.5)
                        assert len(heard) == 2
                        await anyio.to_thread.run_sync(theirs.unload, their_alias)

    run(go)


def test_a_2026_client_hears_list_changed_through_subscriptions_listen():
    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        transport = streamable_http_client(URL + "/mcp", http_client=http)
        async with Client(transport, mode="2026-07-28") as client:
            assert client.session.protocol_version == "2026-07-28"
            async with client.listen(tools_list_changed=True) as sub:
                with sb.Client(URL, api_key=KEY) as box:
                    alias = await load_other_tool(box, "lc_modern")
                    with anyio.fail_after(5):
                        await sub.__anext__()
                    names = [t.name for t in (await client.list_tools()).tools]
                    assert f"{alias}.f" in names
                    await anyio.to_thread.run_sync(box.unload, alias)
                    with anyio.fail_after(5):
                        await sub.__anext__()

    run(go)
