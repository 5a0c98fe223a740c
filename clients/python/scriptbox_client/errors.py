"""Typed exceptions for scriptbox's error codes (docs/errors.md)."""

from __future__ import annotations

from typing import Any, Dict, Optional


class ScriptboxError(Exception):
    """A request scriptbox answered with an error: its `code`, `status`, `message`, `details`."""

    def __init__(self, code: str, status: int, message: str, details: Optional[Dict[str, Any]] = None):
        super().__init__(f"{code} ({status}): {message}")
        self.code = code
        self.status = status
        self.message = message
        self.details: Dict[str, Any] = details or {}


class ConnectionFailed(ScriptboxError):
    """The server could not be reached or broke off (status 0)."""


class AuthError(ScriptboxError):
    """A missing, wrong or locked-out key (`missing_api_key`, `invalid_api_key`, ...)."""


class Forbidden(ScriptboxError):
    """The key may not do this (`forbidden`, `forbidden_path`)."""


class NotFound(ScriptboxError):
    """No such alias, script, task, job or version (another tenant's look the same)."""


class BadRequest(ScriptboxError):
    """The request itself is malformed (`bad_request`, `invalid_json`, `missing_field`, ...)."""


class Conflict(ScriptboxError):
    """The state does not allow it (`alias_exists`, `script_in_use`, `task_state`, ...)."""


class QuotaExceeded(ScriptboxError):
    """A count, size or rate quota of the tenant (`too_many_tools`, `rate_limited`, ...)."""


class Overloaded(ScriptboxError):
    """The tool's queue or the server is full (`busy`, `overloaded`); retry after a moment."""


class ToolError(ScriptboxError):
    """The tool's own failure (HTTP 422)."""


class PythonException(ToolError):
    """The tool raised; `details` has `type`, `message`, `traceback`, `stdout`, `stderr`."""

    @property
    def type(self) -> Optional[str]:
        return self.details.get("type")

    @property
    def traceback(self) -> Optional[str]:
        return self.details.get("traceback")


class FuelExhausted(ToolError):
    """The call used up its fuel; the tool's state was reset."""


class DeadlineExceeded(ToolError):
    """The call passed its deadline; the tool's state was reset."""


class MemoryLimit(ToolError):
    """The call ran out of the tool's memory (a `MemoryError` in the tool)."""


class OutputLimit(ToolError):
    """The call's output or response passed its cap."""


class SyntaxErrorInScript(ToolError):
    """An uploaded script does not compile (`syntax_error`, with line and column)."""


_BY_CODE = {
    "missing_api_key": AuthError,
    "invalid_api_key": AuthError,
    "too_many_auth_failures": AuthError,
    "forbidden": Forbidden,
    "forbidden_path": Forbidden,
    "not_found": NotFound,
    "package_not_found": NotFound,
    "no_such_version": NotFound,
    "not_installed": NotFound,
    "invalid_json": BadRequest,
    "missing_field": BadRequest,
    "bad_request": BadRequest,
    "unsupported_media_type": BadRequest,
    "payload_too_large": BadRequest,
    "alias_exists": Conflict,
    "tool_unloaded": Conflict,
    "script_in_use": Conflict,
    "task_state": Conflict,
    "tenant_exists": Conflict,
    "job_elsewhere": Conflict,
    "too_many_tools": QuotaExceeded,
    "too_many_calls": QuotaExceeded,
    "rate_limited": QuotaExceeded,
    "too_many_jobs": QuotaExceeded,
    "too_many_tasks": QuotaExceeded,
    "too_many_venvs": QuotaExceeded,
    "quota_exceeded": QuotaExceeded,
    "busy": Overloaded,
    "overloaded": Overloaded,
    "python_exception": PythonException,
    "fuel_exhausted": FuelExhausted,
    "deadline_exceeded": DeadlineExceeded,
    "output_limit": OutputLimit,
    "syntax_error": SyntaxErrorInScript,
}


def error_for(code: str, status: int, message: str, details: Optional[Dict[str, Any]]) -> ScriptboxError:
    """The exception for an error answer."""
    details = details or {}
    if code == "python_exception" and details.get("type") == "MemoryError":
        return MemoryLimit(code, status, message, details)
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = ToolError if status == 422 else ScriptboxError
    return cls(code, status, message, details)
