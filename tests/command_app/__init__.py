"""Modules the worker-command tests import in worker processes."""
