"""The API's error responses: one error model, and what each operation documents.

Every error has the body ``{"detail": ...}``: a sentence, or (422, and 409 for settings that
contradict each other) a list of issues, each naming where (``loc``) and what (``msg``).
:func:`document_errors` completes the OpenAPI description so that every operation lists the
error statuses it can return, all with :class:`ErrorOut`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, status
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field


class Issue(BaseModel):
    """One thing wrong with a request: where (``loc``, e.g. body, config, federated,
    rounds) and what."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error response: a sentence saying what went wrong and what to do, or issues."""

    detail: str | list[Issue] = Field(description="what went wrong, or one issue per problem")


def error(description: str) -> dict[str, Any]:
    """An OpenAPI response entry with the error model."""
    return {"model": ErrorOut, "description": description}


UNAUTHORIZED = {status.HTTP_401_UNAUTHORIZED: error("not logged in, or the session ended")}
FORBIDDEN = {
    status.HTTP_403_FORBIDDEN: error(
        "not allowed: an admin's action, or a cookie-signed change from another site"
    )
}
LOGGED_IN = UNAUTHORIZED
ADMIN_ONLY = {**UNAUTHORIZED, **FORBIDDEN}
NO_RUN = {status.HTTP_404_NOT_FOUND: error("no run with that id")}
THROTTLED = {
    status.HTTP_429_TOO_MANY_REQUESTS: {
        **error("too many wrong passwords: try again after Retry-After seconds"),
        "headers": {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        },
    }
}

# Added to every operation by document_errors.
VALIDATION = error("a parameter or the body does not fit this description; detail says where")
MALFORMED_BODY = error("the body is not JSON")
STORE_DOWN = error("the run store (database) cannot be reached now")


def document_errors(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI description with the errors every operation can return: 422 (and
    400 for a body that is not JSON) with :class:`ErrorOut`, 401 for every operation that
    needs a login, 503 when the store is down. Cached on the app."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["ErrorOut"] = error_schema
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    response["content"] = {"application/json": {"schema": ref}}
            if operation.get("parameters") or "requestBody" in operation:
                responses.setdefault("422", _response(VALIDATION, ref))
                responses["422"]["content"] = {"application/json": {"schema": ref}}
            if "requestBody" in operation:
                responses.setdefault("400", _response(MALFORMED_BODY, ref))
            if operation.get("security"):
                responses.setdefault("401", _response(UNAUTHORIZED[401], ref))
            responses.setdefault("503", _response(STORE_DOWN, ref))
    app.openapi_schema = schema
    return schema


def _response(entry: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    return {"description": entry["description"], "content": {"application/json": {"schema": ref}}}
