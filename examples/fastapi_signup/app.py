"""The web application: a `User` model of its own and ``POST /signup``.

``uvicorn examples.fastapi_signup.app:app`` serves it on the database named by
``SQLA_JOBS_DATABASE_URL`` (the worker reads the same variable).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from examples.fastapi_signup.tasks import SendWelcomeEmail
from examples.launch import database_url
from sqla_jobs import enqueue


class AppBase(DeclarativeBase):
    """The application's own models; sqla_jobs' tables live beside them, on their own Base."""


class User(AppBase):
    __tablename__ = "fastapi_signup_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    referred_by_id: Mapped[int | None] = mapped_column(ForeignKey("fastapi_signup_user.id"))


# Read at import, so a missing or unusable URL stops uvicorn with one sentence.
DATABASE_URL = database_url("postgresql+asyncpg")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(DATABASE_URL)
    # The example creates its own table; an application with its own Alembic would migrate it
    # (README: "Schema and migrations").
    async with engine.begin() as connection:
        await connection.run_sync(AppBase.metadata.create_all)
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    # Leaving the block without a commit rolls the transaction back: a request that fails
    # keeps nothing it added.
    async with request.app.state.sessions() as session:
        yield session


class Signup(BaseModel):
    email: str = Field(min_length=3, max_length=255, pattern="@")
    name: str = Field(min_length=1, max_length=255)
    referred_by: str | None = None


class SignedUp(BaseModel):
    id: int
    email: str


@app.post("/signup", status_code=201)
async def sign_up(form: Signup, session: Annotated[AsyncSession, Depends(get_session)]) -> SignedUp:
    """Create the user and enqueue its welcome e-mail, in one transaction."""
    user = User(email=form.email, name=form.name)
    session.add(user)
    session.add(enqueue(SendWelcomeEmail(email=form.email, name=form.name), context="signup"))
    try:
        if form.referred_by is not None:
            # This query flushes first: the user's and the job's INSERTs have run when it
            # finds no referrer, and the rollback takes back both.
            referrer = await session.scalar(select(User).where(User.email == form.referred_by))
            if referrer is None:
                raise HTTPException(422, f"no user signed up as {form.referred_by}")
            user.referred_by_id = referrer.id
        await session.commit()  # the user and its job, or neither
    except IntegrityError:
        raise HTTPException(409, f"{form.email} is already signed up") from None
    return SignedUp(id=user.id, email=user.email)
