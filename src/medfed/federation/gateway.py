"""The hospital-facing port: Flower's Fleet API only, over TLS, for registered hospitals.

Flower's SuperLink serves its Fleet, Control and Runtime APIs on one port, and the Control API
(submit, stop and list runs, register nodes) has no authentication of its own. So the SuperLink
listens on loopback only, and this gateway, listening at ``federated.server_address``, passes on
the Fleet calls a SuperNode makes and nothing else. A request whose public key is not a
registered hospital's is refused here, before the SuperLink sees it (which checks the signature
again). ``POST /medfed/v1/hello`` lets a hospital check, before it starts, that the platform
knows its key and under which name.

Run as ``python -m medfed.federation.gateway``; the store URL comes from ``MEDFED_STORE_URL``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import logging
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from medfed.federation.keys import ssh_public_key, verify_signed_timestamp
from medfed.store import HospitalRecord, RunStore

log = logging.getLogger("medfed.gateway")

# Every call a SuperNode makes (flwr.supernode.fleet_http_client.FleetHttpClient).
FLEET_PATHS = frozenset(
    f"/v1/fleet/{name}"
    for name in (
        "register-node",
        "activate-node",
        "deactivate-node",
        "unregister-node",
        "send-node-heartbeat",
        "pull-messages",
        "push-messages",
        "get-run",
        "get-fab",
        "push-object",
        "pull-object",
        "confirm-message-received",
    )
)
PUBLIC_KEY_HEADER = "flwr-public-key"  # flwr.supercore.constant.FLEET_HTTP_PUBLIC_KEY_HEADER
SIGNATURE_HEADER = "flwr-signature"
TIMESTAMP_HEADER = "flwr-timestamp"
HELLO_PATH = "/medfed/v1/hello"
HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "upgrade", "te"}
REGISTRY_TTL_S = 2.0
UPSTREAM_TIMEOUT_S = 300.0


class Registry:
    """Registered hospitals by OpenSSH public key, re-read from the store every few seconds."""

    def __init__(self, store: RunStore | None):
        self.store = store
        self._keys: dict[str, HospitalRecord] = {}
        self._removed: dict[str, HospitalRecord] = {}
        self._read_at = -REGISTRY_TTL_S

    def _refresh(self) -> None:
        if self.store is None or time.monotonic() - self._read_at < REGISTRY_TTL_S:
            return
        hospitals = [h for h in self.store.list_hospitals() if h.public_key]
        self._keys = {h.public_key: h for h in hospitals if h.registered}
        self._removed = {h.public_key: h for h in hospitals if not h.registered}
        self._read_at = time.monotonic()

    def lookup(self, public_key: str) -> tuple[HospitalRecord | None, HospitalRecord | None]:
        """``(registered, removed)`` hospital holding this key (either may be None)."""
        self._refresh()
        return self._keys.get(public_key), self._removed.get(public_key)


def _claimed_key(request: Request) -> str | None:
    """The OpenSSH form of the PEM public key a SuperNode sends, or None if absent/garbled."""
    raw = request.headers.get(PUBLIC_KEY_HEADER)
    if raw is None:
        return None
    try:
        return ssh_public_key(base64.b64decode(raw, validate=True))
    except (ValueError, binascii.Error):
        return None


def _refusal(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def create_gateway(
    upstream: str,
    ca_path: Path | None,
    store: RunStore | None,
    node_status: Callable[[int], str | None] = lambda _node_id: None,
) -> Starlette:
    """The gateway app forwarding Fleet calls to ``upstream`` (``https://127.0.0.1:PORT``).

    ``store`` None (``--insecure``): no hospital keys, every SuperNode is let through.
    ``node_status`` gives Flower's status of a node id (``online`` refuses a second client).
    """
    verify: ssl.SSLContext | bool = False
    if ca_path is not None:
        verify = ssl.create_default_context(cafile=str(ca_path))
    registry = Registry(store)
    client = httpx.AsyncClient(
        base_url=upstream, verify=verify, timeout=UPSTREAM_TIMEOUT_S, trust_env=False
    )

    async def authorised(request: Request) -> Response | None:
        if store is None:
            return None
        key = _claimed_key(request)
        if key is None:
            return _refusal(401, "no hospital key: start the hospital with `medfed client --key`")
        registered, removed = await run_in_threadpool(registry.lookup, key)
        if registered is not None:
            return None
        if removed is not None:
            return _refusal(403, f"hospital {removed.name!r} was removed from this platform")
        return _refusal(403, "this hospital key is not registered on this platform")

    async def fleet(request: Request) -> Response:
        if request.url.path not in FLEET_PATHS:
            return _refusal(404, "this port answers Flower's Fleet API only")
        refused = await authorised(request)
        if refused is not None:
            return refused
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream_request = client.build_request(
            "POST", request.url.path, headers=headers, content=request.stream()
        )
        try:
            reply = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("SuperLink unreachable: %s", exc)
            return _refusal(503, "the platform's SuperLink is not answering; try again shortly")
        return StreamingResponse(
            _relay(reply),
            status_code=reply.status_code,
            headers={k: v for k, v in reply.headers.items() if k.lower() not in HOP_BY_HOP},
        )

    async def hello(request: Request) -> Response:
        key = _claimed_key(request)
        if store is None:
            return JSONResponse({"hospital": None, "authentication": False})
        if key is None or not verify_signed_timestamp(
            request.headers.get(PUBLIC_KEY_HEADER, ""),
            request.headers.get(TIMESTAMP_HEADER, ""),
            request.headers.get(SIGNATURE_HEADER, ""),
        ):
            return _refusal(401, "the hospital key's signature does not verify")
        refused = await authorised(request)
        if refused is not None:
            return refused
        registered, _ = await run_in_threadpool(registry.lookup, key)
        assert registered is not None
        if registered.node_id is not None and (
            await run_in_threadpool(node_status, registered.node_id) == "online"
        ):
            return _refusal(
                409,
                f"hospital {registered.name!r} is already connected from another "
                "`medfed client` with this key: stop that one first (if it just stopped, the "
                "platform notices within a minute)",
            )
        return JSONResponse({"hospital": registered.name, "authentication": True})

    async def not_fleet(request: Request) -> Response:
        return _refusal(404, "this port answers Flower's Fleet API only")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[
            Route(HELLO_PATH, hello, methods=["POST"]),
            Route("/v1/fleet/{name:str}", fleet, methods=["POST"]),
            Route("/{path:path}", not_fleet, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ],
        lifespan=lifespan,
    )


async def _relay(reply: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in reply.aiter_raw():
            yield chunk
    finally:
        await reply.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True, help="SuperLink on loopback")
    parser.add_argument("--certs", type=Path, help="folder of ca.pem, server.pem, server.key")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP, no hospital keys")
    args = parser.parse_args(argv)

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.insecure:
        app = create_gateway(f"http://127.0.0.1:{args.upstream_port}", None, None)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    from medfed.federation.hospitals import control_client, node_statuses

    store = RunStore(os.environ["MEDFED_STORE_URL"])
    ca_path = args.certs / "ca.pem"

    def node_status(node_id: int) -> str | None:
        client = control_client(args.upstream_port, ca_path)
        try:
            return node_statuses(client).get(node_id)
        finally:
            client.close()

    app = create_gateway(f"https://127.0.0.1:{args.upstream_port}", ca_path, store, node_status)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        ssl_certfile=str(args.certs / "server.pem"),
        ssl_keyfile=str(args.certs / "server.key"),
        timeout_keep_alive=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
