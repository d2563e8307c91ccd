"""The medfed web API (FastAPI) and the built dashboard it serves."""

from medfed.api.app import create_app

__all__ = ["create_app"]
