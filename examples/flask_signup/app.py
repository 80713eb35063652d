"""The web application: a `User` model of its own and ``POST /signup``, on Flask-SQLAlchemy.

``flask --app examples.flask_signup.app run`` serves it on the database named by
``SQLA_JOBS_DATABASE_URL`` (the worker reads the same variable), through psycopg.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from examples.flask_signup.tasks import SendWelcomeEmail
from examples.launch import database_url
from sqla_jobs import enqueue


class AppBase(DeclarativeBase):
    """The application's own models; sqla_jobs' tables live beside them, on their own Base."""


db = SQLAlchemy(model_class=AppBase)


class User(db.Model):  # type: ignore[name-defined, misc]  # Flask-SQLAlchemy makes db.Model at run time
    __tablename__ = "flask_signup_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    referred_by_id: Mapped[int | None] = mapped_column(ForeignKey("flask_signup_user.id"))


app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = database_url("postgresql+psycopg")
db.init_app(app)
with app.app_context():
    # The example creates its own table; an application with its own Alembic would migrate it
    # (README: "Schema and migrations").
    db.create_all()


@app.post("/signup")
def sign_up() -> tuple[dict[str, Any], int]:
    """Create the user and enqueue its welcome e-mail, in one transaction."""
    form = request.get_json(silent=True)
    if not isinstance(form, dict):
        return {"error": "send a JSON object: email, name and optionally referred_by"}, 400
    email, name, referred_by = form.get("email"), form.get("name"), form.get("referred_by")
    if not (_is_text(email) and "@" in email and _is_text(name)):
        return {"error": "email (an e-mail address) and name must be text"}, 400
    if referred_by is not None and not _is_text(referred_by):
        return {"error": "referred_by must be an e-mail address"}, 400
    user = User(email=email, name=name)
    db.session.add(user)
    db.session.add(enqueue(SendWelcomeEmail(email=email, name=name), context="signup"))
    try:
        if referred_by is not None:
            # This query flushes first: the user's and the job's INSERTs have run when it
            # finds no referrer, and the rollback takes back both.
            referrer = db.session.scalar(select(User).where(User.email == referred_by))
            if referrer is None:
                db.session.rollback()
                return {"error": f"no user signed up as {referred_by}"}, 422
            user.referred_by_id = referrer.id
        db.session.commit()  # the user and its job, or neither
    except IntegrityError:
        db.session.rollback()
        return {"error": f"{email} is already signed up"}, 409
    return {"id": user.id, "email": user.email}, 201


def _is_text(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= 255
