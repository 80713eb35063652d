"""The dashboard's settings, from ``SQLA_JOBS_DASHBOARD_*`` environment variables or `.env`."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sqla_jobs.errors import ConfigurationError

from .auth import Auth, BasicAuth, BearerToken

DEFAULT_MAX_BATCH = 500


class DashboardSettings(BaseSettings):
    """How the dashboard authenticates and what it lets people do.

    >>> DashboardSettings(user="ops", password="s3cret-enough").auth()
    BasicAuth(username='ops')
    """

    model_config = SettingsConfigDict(
        env_prefix="SQLA_JOBS_DASHBOARD_", env_file=".env", extra="ignore"
    )

    user: str | None = None
    """Basic auth user name; needs `password`."""
    password: SecretStr | None = None
    token: SecretStr | None = None
    """A bearer token (at least 16 characters), instead of a user and password."""
    read_only: bool = False
    """Hide every button and refuse every change."""
    hide_payloads: bool = False
    """Never show job payloads (they may hold personal data)."""
    max_batch: int = Field(default=DEFAULT_MAX_BATCH, ge=1, le=10_000)
    """The most dead letters one click retries or deletes."""

    def auth(self) -> Auth | None:
        """Return the credentials these settings configure; None when there are none."""
        password = self.password.get_secret_value() if self.password else None
        token = self.token.get_secret_value() if self.token else None
        if token and (self.user or password):
            raise ConfigurationError(
                "set either SQLA_JOBS_DASHBOARD_TOKEN or a user and password, not both"
            )
        try:
            if token:
                return BearerToken(token)
            if self.user or password:
                return BasicAuth(self.user or "", password or "")
        except ValueError as exc:
            raise ConfigurationError(f"dashboard credentials: {exc}") from exc
        return None
