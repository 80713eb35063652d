"""``python -m sqla_jobs migrate|worker``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
