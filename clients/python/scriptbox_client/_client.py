"""The client: one httpx connection pool, one method per operation."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import httpx

from .errors import ConnectionFailed, ScriptboxError, error_for

Json = Any
#: A callback for streamed output: gets each piece of text as the guest writes it.
OnOutput = Optional[Callable[[str], None]]

#: Every route the client uses, as (method, OpenAPI path); a test checks them against
#: the server's /openapi.json.
ROUTES = [
    ("put", "/scripts/{name}"),
    ("get", "/scripts"),
    ("post", "/python/load"),
    ("post", "/python/unload"),
    ("get", "/python/list"),
    ("post", "/python/call"),
    ("post", "/api/python/execute"),
    ("post", "/tasks"),
    ("get", "/tasks"),
    ("get", "/tasks/{id}"),
    ("delete", "/tasks/{id}"),
    ("get", "/health"),
]


class CallResult:
    """A call's answer: `result`, `stdout`, `stderr`, `fuel_used`, `elapsed_ms`, `state_reset`."""

    def __init__(self, data: Dict[str, Any]):
        self.data = data
        self.result: Json = data.get("result")
        self.stdout: str = data.get("stdout", "")
        self.stderr: str = data.get("stderr", "")
        self.fuel_used: int = data.get("fuel_used", 0)
        self.elapsed_ms: float = data.get("elapsed_ms", 0.0)
        self.state_reset: bool = data.get("state_reset", False)

    def __repr__(self) -> str:
        return f"CallResult(result={self.result!r}, fuel_used={self.fuel_used})"


class Client:
    """A scriptbox server, as one tenant.

    >>> sb = Client("http://127.0.0.1:8000", api_key="...")
    >>> sb.upload_script("mathy", "def add(a, b):\\n    return a + b\\n")
    >>> sb.load("mathy", alias="m")
    >>> sb.call("m", "add", 2, 3)
    5
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: Optional[str] = None, timeout: float = 120.0):
        headers = {"x-api-key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Turns httpx's timeouts and transport errors into `ConnectionFailed`."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ConnectionFailed("timeout", 0, f"no answer from {self._http.base_url}: {exc}") from None
        except httpx.TransportError as exc:
            raise ConnectionFailed("unreachable", 0, f"{self._http.base_url} could not be reached: {exc}") from None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._reaching():
            return self._http.request(method, path, **kwargs)

    def _data(self, response: httpx.Response) -> Json:
        try:
            body = response.json()
        except ValueError:
            body = {}
        return self._unwrap(body, response.is_success, response.status_code, response.text)

    @staticmethod
    def _unwrap(body: Json, ok: bool, status: int, text: str) -> Json:
        if ok:
            return body.get("data", body) if isinstance(body, dict) else body
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise error_for(error.get("code", "error"), status, error.get("message", ""), error.get("details"))
        raise ScriptboxError("error", status, text[:500])

    def _streamed(self, path: str, body: Json, on_stdout: OnOutput, on_stderr: OnOutput) -> Tuple[Json, bool, int]:
        """POSTs `body` asking for an event stream (docs/api.md, "Streaming"): hands each
        `stdout`/`stderr` piece to its callback as it arrives; the final JSON answer, whether
        it was a `result` (not an `error`), and its status (the final event's `id`)."""
        headers = {"accept": "text/event-stream"}
        with self._reaching(), self._http.stream("POST", path, json=body, headers=headers) as response:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                response.read()
                return self._plain(response)
            for name, data, event_id in _events(response.iter_lines()):
                if name in ("stdout", "stderr"):
                    callback = on_stdout if name == "stdout" else on_stderr
                    if callback is not None:
                        callback(json.loads(data)["text"])
                elif name in ("result", "error"):
                    status = int(event_id) if event_id.isdigit() else response.status_code
                    return json.loads(data), name == "result", status
        raise ConnectionFailed("broken_stream", 0, "the event stream ended without an answer")

    @staticmethod
    def _plain(response: httpx.Response) -> Tuple[Json, bool, int]:
        try:
            body = response.json()
        except ValueError:
            body = {}
        return body, response.is_success, response.status_code

    # -- scripts

    def upload_script(self, name: str, source: Union[str, bytes], *, package: bool = False) -> Dict[str, Any]:
        """Stores `source` (a module's text, or a zip's bytes with `package=True`) as a new
        version of the tenant's script `name`; its record."""
        body = source.encode("utf-8") if isinstance(source, str) else source
        kind = "application/zip" if package else "text/x-python"
        return self._data(self._request("PUT", f"/scripts/{name}", content=body, headers={"content-type": kind}))

    def scripts(self) -> List[Dict[str, Any]]:
        """The tenant's scripts and the shared ones."""
        return self._data(self._request("GET", "/scripts"))["scripts"]

    # -- tools

    def load(
        self,
        script: str,
        alias: Optional[str] = None,
        *,
        mode: Optional[str] = None,
        limits: Optional[Mapping[str, int]] = None,
        version: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Loads `script` as `alias` (default: the script's name); the tool's record."""
        body: Dict[str, Any] = {"script_name": script, "alias": alias or script}
        if mode is not None:
            body["mode"] = mode
        if limits:
            body["limits"] = dict(limits)
        if version is not None:
            body["version"] = version
        return self._data(self._request("POST", "/python/load", json=body))

    def unload(self, alias: str) -> None:
        self._data(self._request("POST", "/python/unload", json={"alias": alias}))

    def tools(self) -> List[Dict[str, Any]]:
        """The loaded tools."""
        return self._data(self._request("GET", "/python/list"))["tools"]

    def call_full(
        self,
        alias: str,
        function: str,
        *args: Json,
        on_stdout: OnOutput = None,
        on_stderr: OnOutput = None,
        **kwargs: Json,
    ) -> CallResult:
        """Calls `alias.function(*args, **kwargs)`; the whole answer. Raises the error
        code's exception (FuelExhausted, DeadlineExceeded, PythonException, ...).

        With `on_stdout` (or `on_stderr`) the call is streamed: each piece of the tool's
        `print()` output goes to the callback while the call runs (the answer's `stdout` still
        has all of it). These two names are the client's: a function argument of that name
        cannot be passed as a keyword here."""
        body = {"alias": alias, "function_name": function, "args": list(args), "kwargs": kwargs}
        if on_stdout is None and on_stderr is None:
            return CallResult(self._data(self._request("POST", "/python/call", json=body)))
        answer, ok, status = self._streamed("/python/call", body, on_stdout, on_stderr)
        return CallResult(self._unwrap(answer, ok, status, json.dumps(answer)))

    def call(
        self,
        alias: str,
        function: str,
        *args: Json,
        on_stdout: OnOutput = None,
        on_stderr: OnOutput = None,
        **kwargs: Json,
    ) -> Json:
        """Calls `alias.function(*args, **kwargs)`; its result (see `call_full`)."""
        return self.call_full(alias, function, *args, on_stdout=on_stdout, on_stderr=on_stderr, **kwargs).result

    def execute(
        self,
        code: str,
        args: Json = None,
        *,
        timeout: Optional[float] = None,
        on_stdout: OnOutput = None,
        on_stderr: OnOutput = None,
    ) -> Dict[str, Any]:
        """Runs `code` in a fresh sandbox; `{success, result, stdout, stderr, ...}`. A failed
        run raises its error code's exception, with the answer in `details`. `on_stdout` and
        `on_stderr` stream its output as in `call_full`."""
        body: Dict[str, Any] = {"code": code}
        if args is not None:
            body["args"] = args
        if timeout is not None:
            body["timeout"] = timeout
        if on_stdout is None and on_stderr is None:
            answer, _, status = self._plain(self._request("POST", "/api/python/execute", json=body))
        else:
            answer, _, status = self._streamed("/api/python/execute", body, on_stdout, on_stderr)
        if isinstance(answer, dict) and answer.get("success") is True:
            return answer
        if isinstance(answer, dict) and "success" in answer:
            details = dict(answer.get("details") or {})
            details.setdefault("stdout", answer.get("stdout", ""))
            details.setdefault("stderr", answer.get("stderr", ""))
            raise error_for(answer.get("error_code") or "error", status, str(answer.get("error")), details)
        return self._unwrap(answer, False, status, json.dumps(answer))

    # -- tasks

    def submit_task(self, name: str, steps: Sequence[Mapping[str, Any]], **options: Any) -> str:
        """Submits a task; its id."""
        body = {"name": name, "steps": [dict(s) for s in steps], **options}
        return self._data(self._request("POST", "/tasks", json=body))["task_id"]

    def task(self, task_id: str) -> Dict[str, Any]:
        """A task with its steps and history."""
        return self._data(self._request("GET", f"/tasks/{task_id}"))

    def tasks(self, status: Optional[str] = None, limit: int = 20) -> List[Dict[str, Any]]:
        """The newest tasks."""
        params: Dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return self._data(self._request("GET", "/tasks", params=params))["tasks"]

    def cancel_task(self, task_id: str) -> Dict[str, Any]:
        return self._data(self._request("DELETE", f"/tasks/{task_id}"))

    def wait_task(self, task_id: str, timeout: float = 60.0, poll: float = 0.1) -> Dict[str, Any]:
        """Waits until the task has ended; its record."""
        import time

        ends = time.monotonic() + timeout
        while True:
            record = self.task(task_id)
            if record["status"] not in ("pending", "running"):
                return record
            if time.monotonic() > ends:
                raise TimeoutError(f"task {task_id} still {record['status']} after {timeout} s")
            time.sleep(poll)

    def health(self) -> Dict[str, Any]:
        return self._data(self._request("GET", "/health"))




def _events(lines: Iterator[str]) -> Iterator[Tuple[str, str, str]]:
    """Server-sent events as (name, data, id); comments (keep-alives) are skipped."""
    name, event_id = "message", ""
    data: List[str] = []
    for line in lines:
        if line == "":
            if data:
                yield name, "\n".join(data), event_id
            name, event_id, data = "message", "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    if data:
        yield name, "\n".join(data), event_id
