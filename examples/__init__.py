"""Runnable examples: ``python examples/quickstart.py``, ``python -m examples.fastapi_signup``,
``python -m examples.flask_signup`` (from the repository's root)."""
