"""scriptbox_client: a small, typed client for a scriptbox server (httpx only)."""

from ._client import ROUTES, CallResult, Client
from .errors import (
    AuthError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    DeadlineExceeded,
    Forbidden,
    FuelExhausted,
    MemoryLimit,
    NotFound,
    OutputLimit,
    Overloaded,
    PythonException,
    QuotaExceeded,
    ScriptboxError,
    SyntaxErrorInScript,
    ToolError,
)

__all__ = [
    "ROUTES",
    "AuthError",
    "BadRequest",
    "CallResult",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DeadlineExceeded",
    "Forbidden",
    "FuelExhausted",
    "MemoryLimit",
    "NotFound",
    "OutputLimit",
    "Overloaded",
    "PythonException",
    "QuotaExceeded",
    "ScriptboxError",
    "SyntaxErrorInScript",
    "ToolError",
]
