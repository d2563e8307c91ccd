"""The hospital-facing port: Flower's Fleet API only, over TLS, for registered hospitals.

Flower's SuperLink serves its Fleet, Control and Runtime APIs on one port, and the Control API
(submit, stop and list runs, register nodes) has no authentication of its own. So the SuperLink
listens on loopback only, and this gateway, listening at ``federated.server_address``, passes on
the Fleet calls a SuperNode makes and nothing else. A request whose public key is not a
registered hospital's is refused here, before the SuperLink sees it (which checks the signature
again). ``POST /medfed/v1/hello`` lets a hospital check, before it starts, that the platform
knows its key and under which name. ``GET`` and ``PUT`` under ``BLOB_PATH`` serve the model to
hospitals and take their updates beside Flower's messages (see ``blobs.py``); those requests are
signed, and checked here, like ``hello``.

Run as ``python -m medfed.federation.gateway``; the store URL comes from ``MEDFED_STORE_URL``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import logging
import os
import secrets
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from medfed.federation.blob_files import (
    BLOB_PATH,
    MAX_BLOB_BYTES,
    OPEN_UPLOADER,
    RUN_HEX,
    SHA_HEX,
    prune_uploads,
    uploads_of,
)
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


class BlobFile(FileResponse):
    chunk_size = 1 << 20  # a model of tens of MB in fewer, larger TLS writes


def create_gateway(
    upstream: str,
    ca_path: Path | None,
    store: RunStore | None,
    node_status: Callable[[int], str | None] = lambda _node_id: None,
    blobs: Path | None = None,
) -> Starlette:
    """The gateway app forwarding Fleet calls to ``upstream`` (``https://127.0.0.1:PORT``).

    ``store`` None (``--insecure``): no hospital keys, every SuperNode is let through.
    ``node_status`` gives Flower's status of a node id (``online`` refuses a second client).
    ``blobs``: the platform's blob folder (``blob_files.blob_root``); None answers no blob request.
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

    async def identified(request: Request) -> HospitalRecord | Response | None:
        """The registered hospital that signed ``request``, a refusal, or None (insecure)."""
        if store is None:
            return None
        key = _claimed_key(request)
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
        return registered

    async def hello(request: Request) -> Response:
        if store is None:
            return JSONResponse({"hospital": None, "authentication": False})
        registered = await identified(request)
        if isinstance(registered, Response):
            return registered
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

    async def get_blob(request: Request) -> Response:
        hospital = await identified(request)
        if isinstance(hospital, Response):
            return hospital
        run, sha = request.path_params["run"], request.path_params["sha"]
        named = RUN_HEX.fullmatch(run) and SHA_HEX.fullmatch(sha)
        path = None if blobs is None or not named else blobs / "down" / run / sha
        if path is None or not path.is_file():
            return _refusal(404, "no such blob: a model is kept only while its round lasts")
        log.info("blob %s to %s", sha[:12], _who(hospital))
        return BlobFile(path, media_type="application/octet-stream")

    async def put_blob(request: Request) -> Response:
        hospital = await identified(request)
        if isinstance(hospital, Response):
            return hospital
        sha, length = request.path_params["sha"], request.headers.get("content-length", "")
        if blobs is None or not SHA_HEX.fullmatch(sha):
            return _refusal(404, "blobs are named by the SHA-256 of their bytes, in hex")
        if not length.isdigit() or int(length) > MAX_BLOB_BYTES:
            return _refusal(
                413, f"a blob upload needs a Content-Length of at most {MAX_BLOB_BYTES}"
            )
        folder = uploads_of(blobs, OPEN_UPLOADER if hospital is None else hospital.name)
        folder.mkdir(parents=True, exist_ok=True)
        if not await _receive(request, folder, sha, int(length)):
            return _refusal(400, "the body is not the blob its name and Content-Length say")
        prune_uploads(folder)
        log.info("blob %s (%s bytes) from %s", sha[:12], length, _who(hospital))
        return JSONResponse({"sha256": sha, "size": int(length)}, status_code=201)

    async def not_fleet(request: Request) -> Response:
        return _refusal(404, "this port answers Flower's Fleet API only")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[
            Route(HELLO_PATH, hello, methods=["POST"]),
            Route(BLOB_PATH + "/{run:str}/{sha:str}", get_blob, methods=["GET"]),
            Route(BLOB_PATH + "/{sha:str}", put_blob, methods=["PUT"]),
            Route("/v1/fleet/{name:str}", fleet, methods=["POST"]),
            Route("/{path:path}", not_fleet, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ],
        lifespan=lifespan,
    )


def _who(hospital: HospitalRecord | None) -> str:
    return "a hospital (insecure platform)" if hospital is None else repr(hospital.name)


async def _receive(request: Request, folder: Path, sha: str, length: int) -> bool:
    """Store the request's body as ``folder/sha`` if it is ``length`` bytes hashing to ``sha``."""
    part = folder / f".{sha}.{secrets.token_hex(4)}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with part.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > length:
                    return False
                digest.update(chunk)
                out.write(chunk)
        if size != length or digest.hexdigest() != sha:
            return False
        os.replace(part, folder / sha)
        return True
    finally:
        part.unlink(missing_ok=True)


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
    parser.add_argument("--blobs", type=Path, help="the platform's blob folder (none: no blobs)")
    args = parser.parse_args(argv)

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.insecure:
        upstream = f"http://127.0.0.1:{args.upstream_port}"
        app = create_gateway(upstream, None, None, blobs=args.blobs)
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

    app = create_gateway(
        f"https://127.0.0.1:{args.upstream_port}", ca_path, store, node_status, args.blobs
    )
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
