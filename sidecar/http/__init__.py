"""The v0 HTTP API (Quart-Trio on Hypercorn) and ``sidecar serve``."""

from .app import DEFAULT_MAX_BODY, create_app
from .auth import Authenticator, AuthMode
from .serve import InflightTracker, ServeOptions, serve

__all__ = [
    "DEFAULT_MAX_BODY",
    "AuthMode",
    "Authenticator",
    "InflightTracker",
    "ServeOptions",
    "create_app",
    "serve",
]
