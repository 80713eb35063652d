"""FastAPI and an `AsyncSession` on PostgreSQL: a sign-up that enqueues a welcome e-mail."""
