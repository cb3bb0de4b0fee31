"""Request authentication: ``none``, ``token`` (bearer) or ``trusted-header`` (proxy in front).

Probes and metrics bypass authentication so kubelets and Prometheus need no secret. The token
is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import enum
import hmac

__all__ = ["PUBLIC_PATHS", "AuthMode", "Authenticator"]

# Paths that answer without credentials: liveness/readiness probes and the scrape endpoint.
PUBLIC_PATHS = frozenset({"/v0/healthz", "/v0/startupz", "/v0/livez", "/v0/status", "/v0/metrics"})

TRUSTED_USER_HEADER = "X-Remote-User"


class AuthMode(enum.StrEnum):
    NONE = "none"
    TOKEN = "token"
    TRUSTED_HEADER = "trusted-header"


class Authenticator:
    """Decides whether a request's headers are allowed through.

    Args:
        mode: the authentication mode.
        token: the shared secret for ``token`` mode (required there, ignored otherwise).

    Raises:
        ValueError: ``token`` mode without a non-empty token.
    """

    def __init__(self, mode: AuthMode | str, token: str | None = None) -> None:
        self.mode = AuthMode(mode)
        if self.mode is AuthMode.TOKEN and not token:
            raise ValueError("--auth token needs a token: set SIDECAR_TOKEN (or --token-file)")
        # Compare bytes: hmac.compare_digest on str rejects non-ASCII input with a TypeError.
        # Header values arrive latin-1 decoded, so latin-1 re-encoding gives the wire bytes.
        self._expected = f"Bearer {token}".encode() if token else b""

    def __repr__(self) -> str:
        return f"Authenticator(mode={self.mode.value!r})"

    def check(self, headers: dict[str, str] | object) -> str | None:
        """``None`` when allowed; otherwise the reason for a 401 (never containing a secret)."""
        if self.mode is AuthMode.NONE:
            return None
        get = headers.get  # type: ignore[attr-defined]
        if self.mode is AuthMode.TOKEN:
            supplied = get("Authorization")
            if not supplied:
                return "missing bearer token"
            if not hmac.compare_digest(supplied.encode("latin-1", "replace"), self._expected):
                return "invalid bearer token"
            return None
        if not (get(TRUSTED_USER_HEADER) or "").strip():
            return f"missing {TRUSTED_USER_HEADER} header"
        return None
