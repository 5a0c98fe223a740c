# scriptbox guest driver, frames.py: frame encoding and decoding (the JSON codec made once, output sanitised, request ids).
# The parts are one module: runtime/src/guest.rs joins them, in the order it lists, into
# _scriptbox_driver.py; a part uses names the parts before it define.

def _refuse(obj):
    raise TypeError("not JSON: " + type_name(obj))


def _make_encoder():
    """The C encoder made once (json.dumps makes one per call), if it behaves exactly like the
    public API on a sample; otherwise the public API."""
    slow = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    try:
        from json.encoder import c_encode_basestring, c_make_encoder

        fast = c_make_encoder(None, _refuse, c_encode_basestring, None, ":", ",", False, False, False)
        sample = {"a": [1, 2.5, "\u00e9\n\"", None, True, 2**70], "b": {}}
        if "".join(fast(sample, 0)) == slow(sample):
            return lambda obj: "".join(fast(obj, 0))
    except Exception:
        pass
    return slow


def _make_decoder():
    """Request frames are compact JSON written by the host; the C scanner parses them, and
    tagged arguments become their types."""
    scan = json.JSONDecoder(object_hook=_tagged).scan_once

    def decode(raw):
        text = raw.decode("utf-8")
        try:
            value, end = scan(text, 0)
        except StopIteration:
            raise ValueError("not JSON") from None
        if end != len(text):
            raise ValueError("trailing data after the frame")
        return value

    return decode


_ENCODE = _make_encoder()
_DECODE = _make_decoder()


def _printable(text):
    """Text with lone surrogates escaped, so it is valid UTF-8."""
    if type(text) is not str:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _sanitized(frame):
    """A frame that failed to encode as UTF-8: captured text and messages get their lone
    surrogates escaped; if the result still holds one, it is refused."""
    for key in ("stdout", "stderr"):
        frame[key] = _printable(frame.get(key, ""))
    error = frame.get("error")
    if error:
        for key in ("type", "message", "traceback"):
            if key in error:
                error[key] = _printable(error[key])
    try:
        _ENCODE(frame).encode("utf-8")
    except UnicodeEncodeError:
        frame.pop("result", None)
        frame["ok"] = False
        frame["error"] = {"kind": "unserializable_result",
                          "message": "result is not JSON-representable: str with a lone surrogate"}
    return frame


def encode(frame, rid):
    frame["v"] = PROTOCOL
    frame["id"] = rid
    try:
        try:
            return _ENCODE(frame).encode("utf-8")
        except UnicodeEncodeError:
            return _ENCODE(_sanitized(frame)).encode("utf-8")
    except BaseException as exc:  # belt and braces: to_json already vetted the result
        bad = error_frame("unserializable_result", message="result could not be encoded: " + type_name(exc))
        bad["v"], bad["id"] = PROTOCOL, rid
        return json.dumps(bad).encode()


_ID_PREFIX = b'{"v":%d,"id":' % PROTOCOL


def _request_id(raw):
    """The request's id, read from the frame's fixed prefix (the host writes `v` then `id`),
    so even a request the JSON parser refuses is answered under the right id. Plain byte
    operations: a regular expression costs noticeably more fuel per call."""
    if not raw.startswith(_ID_PREFIX):
        return 0
    end = raw.find(b",", len(_ID_PREFIX), len(_ID_PREFIX) + 21)
    digits = raw[len(_ID_PREFIX) : end]
    return int(digits) if end > 0 and digits.isdigit() else 0
