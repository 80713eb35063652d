"""Flask and Flask-SQLAlchemy (a sync `Session`, psycopg): a sign-up enqueues a welcome e-mail."""
