# scriptbox guest driver, egress.py: `scriptbox.http`, outbound HTTP performed by the host.
# The guest has no sockets: a request is a host call, and the host performs it only if the
# tool owner's egress rules allow it (docs/egress.md).


def make_http_module(host_call, base_error):
    """The `scriptbox.http` module: request/get/post, the Response, and the exceptions (each
    a scriptbox.HostError) a refused or failed request raises."""
    import binascii
    import types

    module = types.ModuleType("scriptbox.http")
    module.__doc__ = (
        "Outbound HTTP through the host: only to URLs the tool owner's rules allow; "
        "credentials a rule carries are added by the host and never visible here."
    )

    class HttpError(base_error):
        """An outbound request was not answered."""

    class Denied(HttpError):
        """The owner's rules do not allow the request (host, method, address or redirect)."""

    class Timeout(HttpError):
        """The server did not answer within the request's timeout."""

    class TooLarge(HttpError):
        """The request or response body is over its limit."""

    class LimitExceeded(HttpError):
        """Too many requests for this call or this minute."""

    class InvalidRequest(HttpError, ValueError):
        """The request itself is malformed (method, URL, headers, body)."""

    class RequestFailed(HttpError):
        """The server could not be reached or broke off the answer."""

    kinds = {
        "denied": Denied,
        "timeout": Timeout,
        "too_large": TooLarge,
        "limit": LimitExceeded,
        "bad_request": InvalidRequest,
        "failed": RequestFailed,
    }

    class Response:
        """A response: `status`, `headers` (a dict, names in lower case), `content` (bytes),
        `url`; `.text`, `.json()`. Unpacks as `(status, headers, content)`."""

        __slots__ = ("status", "headers", "content", "url")

        def __init__(self, status, headers, content, url):
            self.status = status
            self.headers = headers
            self.content = content
            self.url = url

        @property
        def ok(self):
            return 200 <= self.status < 400

        @property
        def text(self):
            return self.content.decode("utf-8", "replace")

        def json(self):
            import json as _json

            return _json.loads(self.content)

        def __iter__(self):
            return iter((self.status, self.headers, self.content))

        def __repr__(self):
            return "<Response [%d] %d bytes>" % (self.status, len(self.content))

    def request(method, url, headers=None, body=None, json=None, timeout=None):
        """Sends `method` to `url` through the host; the Response. `headers`: a dict or
        (name, value) pairs; `body`: bytes or str; `json`: a value sent as JSON (not with
        `body`); `timeout`: seconds (at most the owner's limit, and within the call's
        deadline). Raises Denied, Timeout, TooLarge, LimitExceeded, InvalidRequest or
        RequestFailed."""
        if not isinstance(method, str) or not isinstance(url, str):
            raise TypeError("method and url must be strings")
        pairs = []
        if headers is not None:
            items = headers.items() if hasattr(headers, "items") else headers
            for name, value in items:
                if not isinstance(name, str) or not isinstance(value, str):
                    raise TypeError("header names and values must be strings")
                pairs.append([name, value])
        if json is not None:
            if body is not None:
                raise TypeError("pass body or json, not both")
            import json as _json

            body = _json.dumps(json).encode("utf-8")
            if not any(name.lower() == "content-type" for name, _ in pairs):
                pairs.append(["content-type", "application/json"])
        if isinstance(body, str):
            body = body.encode("utf-8")
        fields = {"method": method, "url": url, "headers": pairs}
        if body is not None:
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError("body must be bytes or str")
            fields["body"] = binascii.b2a_base64(bytes(body), newline=False).decode("ascii")
        if timeout is not None:
            fields["timeout_ms"] = max(1, int(float(timeout) * 1000))
        answer = host_call("http", request=fields)
        if not isinstance(answer, dict):
            raise HttpError("the host gave no answer")
        error = answer.get("error")
        if error is not None:
            raise kinds.get(error.get("kind"), HttpError)(str(error.get("message")))
        r = answer["response"]
        merged = {}
        for name, value in r["headers"]:
            merged[name] = merged[name] + ", " + value if name in merged else value
        content = binascii.a2b_base64(r["body"])
        return Response(r["status"], merged, content, r["url"])

    def get(url, **kwargs):
        """`request("GET", url, ...)`."""
        return request("GET", url, **kwargs)

    def post(url, **kwargs):
        """`request("POST", url, ...)`."""
        return request("POST", url, **kwargs)

    for cls in (HttpError, Denied, Timeout, TooLarge, LimitExceeded, InvalidRequest, RequestFailed, Response):
        cls.__module__ = "scriptbox.http"
        setattr(module, cls.__name__, cls)
    module.request = request
    module.get = get
    module.post = post
    return module


NO_NETWORK = "no network in the sandbox: outbound HTTP goes through scriptbox.http (if the tool owner's rules allow it)"


def close_the_sockets():
    """The guest's own sockets never reach a network (WASI gives it none); make the failure
    say where to go instead. Name resolution is where socket.create_connection, urllib,
    http.client and the libraries on them start, so that is where they stop."""
    try:
        import _socket
    except ImportError:
        return

    def no_network(*args, **kwargs):
        raise OSError(NO_NETWORK)

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        setattr(_socket, name, no_network)
