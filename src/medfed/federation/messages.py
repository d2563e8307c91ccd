"""Error replies between hospitals and the ServerApp, as typed values.

A hospital's known failure (bad data, a config it cannot honour) travels as a Flower error
with :data:`ERROR_CODE` and a JSON reason ``{"hospital", "message"}``; any other error is
Flower's own (an exception in the ClientApp), whose reason is a traceback.
"""

from __future__ import annotations

import json

from flwr.app import Error, Message

ERROR_CODE = 900


def error_reply(hospital: str | None, message: str, reply_to: Message) -> Message:
    """A hospital's known failure as an error reply."""
    reason = json.dumps({"hospital": hospital, "message": message})
    return Message(Error(code=ERROR_CODE, reason=reason), reply_to=reply_to)


def read_error(error: Error) -> tuple[str | None, str]:
    """``(hospital it names, one-line reason)`` of an error reply."""
    if error.code == ERROR_CODE:
        try:
            body = json.loads(error.reason or "")
            return body.get("hospital"), str(body["message"])[:2000]
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    lines = [line.strip() for line in (error.reason or "").splitlines() if line.strip()]
    for line in reversed(lines):  # Flower's own errors carry a traceback: its last error line
        if "Error:" in line or "Exception:" in line:
            return None, line.split("Message:", 1)[-1].strip()[:500]
    return None, lines[-1][:500] if lines else f"the hospital failed (error code {error.code})"
