"""Who may see the dashboard: HTTP basic auth or a bearer token, checked on every request."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

REALM = "sqla_jobs dashboard"


@dataclass(frozen=True)
class BasicAuth:
    """Let in the requests that carry this user name and password (HTTP basic auth).

    >>> create_app(engine, auth=BasicAuth("ops", os.environ["DASHBOARD_PASSWORD"]))
    """

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.username or not self.password:
            raise ValueError("basic auth needs a non-empty user name and password")
        if ":" in self.username:
            raise ValueError("a basic auth user name cannot contain ':'")

    def allows(self, authorization: str) -> bool:
        """Tell whether the ``Authorization`` header value carries these credentials."""
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        username, password = credentials
        # Both compared, always: the time taken tells nothing about which one was wrong.
        user_ok = hmac.compare_digest(username.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return user_ok and password_ok


@dataclass(frozen=True)
class BearerToken:
    """Let in the requests that carry this token: ``Authorization: Bearer <token>``.

    A browser cannot send a bearer header from its address bar, so the token is also accepted
    as the password of basic auth (any user name): the browser's login prompt takes it.

    >>> create_app(engine, auth=BearerToken(os.environ["DASHBOARD_TOKEN"]))
    """

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ValueError("a dashboard token must be at least 16 characters long")

    def allows(self, authorization: str) -> bool:
        """Tell whether the ``Authorization`` header value carries this token."""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        return hmac.compare_digest(credentials[1].encode(), self.token.encode())


Auth = BasicAuth | BearerToken


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


class AuthMiddleware:
    """Answer 401 with a basic-auth challenge to every request `auth` does not allow."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization", "")
        if self.auth.allows(authorization):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "Authentication required.\n",
            status_code=401,
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )
        await response(scope, receive, send)
