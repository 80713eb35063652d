"""``python -m sqla_jobs``: the ``sqla-jobs`` command line (worker, migrate, stats, ...)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
