"""Outbound HTTP through scriptbox.http (tests/api/egress.rs)."""

import scriptbox
from scriptbox import http


def fetch(url, method="GET", headers=None, body=None, timeout=None):
    try:
        r = http.request(method, url, headers=headers, body=body, timeout=timeout)
    except http.HttpError as exc:
        return {"error": type(exc).__name__, "message": str(exc),
                "is_host_error": isinstance(exc, scriptbox.HostError)}
    return {"status": r.status, "headers": r.headers, "text": r.text, "url": r.url}


def post_json(url, value):
    r = http.post(url, json=value)
    return r.json()


def unpack(url):
    status, headers, content = http.get(url)
    return [status, len(content), headers.get("content-type")]


def repeat(url, n):
    """Requests `url` n times; how many were answered and the first error."""
    done = 0
    for _ in range(n):
        try:
            http.get(url)
        except http.HttpError as exc:
            return [done, type(exc).__name__, str(exc)]
        done += 1
    return [done, None, None]


def everything_seen(url):
    """All the guest can read of an answer: status, headers, body, url, as one text."""
    r = http.get(url)
    return repr((r.status, sorted(r.headers.items()), r.content, r.url))


def sockets(port):
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError as exc:
        return str(exc)
    return "connected"
