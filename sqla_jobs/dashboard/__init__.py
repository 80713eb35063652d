"""The web dashboard: see and steer the queue from a browser (``pip install sqla_jobs[dashboard]``).

Serve it with ``sqla-jobs dashboard``, or mount `create_app(...)` in your own ASGI application:

>>> from starlette.routing import Mount
>>> routes.append(Mount("/jobs", create_app(engine, auth=BasicAuth("ops", password))))
"""

from __future__ import annotations

from .app import create_app as create_app
from .auth import BasicAuth as BasicAuth
from .auth import BearerToken as BearerToken
from .settings import DashboardSettings as DashboardSettings

__all__ = ["BasicAuth", "BearerToken", "DashboardSettings", "create_app"]
