"""``python -m sqla_jobs.worker``: run a worker from settings and flags."""

from __future__ import annotations

import sys

from sqla_jobs.worker.command import main

sys.exit(main())
