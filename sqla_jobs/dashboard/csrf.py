"""CSRF protection of the dashboard's forms: a signed double-submit cookie.

Each browser gets a random token, signed with the app's secret, in an HttpOnly, SameSite=Strict
cookie; every form carries the same token in a hidden field. A POST is accepted only when both
are present, equal, and the signature is the app's: another site can make a browser send the
cookie, but cannot read it to put it in the form, nor forge a signed token of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

COOKIE_NAME = "sqla_jobs_csrf"
FIELD_NAME = "csrf_token"


class CsrfTokens:
    """Issue and check the CSRF tokens of one dashboard app, signed with `secret`."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the CSRF secret must be at least 16 bytes long")
        self._secret = secret

    def token_for(self, request: Request) -> str:
        """Return the request's valid CSRF cookie token, or a new one `set_cookie` must send."""
        existing = request.cookies.get(COOKIE_NAME, "")
        if self.is_signed(existing):
            return existing
        nonce = secrets.token_urlsafe(32)
        return f"{nonce}.{self._sign(nonce)}"

    def set_cookie(self, request: Request, response: Response, token: str) -> None:
        """Send `token` as the CSRF cookie, unless the browser holds it already."""
        if request.cookies.get(COOKIE_NAME) == token:
            return
        response.set_cookie(
            COOKIE_NAME,
            token,
            path=request.scope.get("root_path") or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def is_signed(self, token: str) -> bool:
        """Tell whether `token` is one this app issued."""
        nonce, dot, signature = token.partition(".")
        if not dot or not nonce:
            return False
        return hmac.compare_digest(signature.encode(), self._sign(nonce).encode())

    def accepts(self, request: Request, submitted: str) -> bool:
        """Tell whether a form's `submitted` token matches the request's signed cookie."""
        cookie = request.cookies.get(COOKIE_NAME, "")
        if not cookie or not submitted:
            return False
        # Both checks always run, so their timing says nothing about which one failed.
        same = hmac.compare_digest(cookie.encode(), submitted.encode())
        return self.is_signed(cookie) and same

    def _sign(self, nonce: str) -> str:
        digest = hmac.new(self._secret, nonce.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
