"""Console users: roles, phone interface, UI language, and argon2 password hashes.

Hashing is deliberately slow (that is argon2's point), so it runs in a worker thread: the
event loop also carries calls. A login for an unknown or disabled user still verifies a
hash, so the response time does not tell which usernames exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from crm_bridge.case_models import ROLES, UI_LANGUAGES, User
from crm_bridge.db import session_factory

log = logging.getLogger("guichet.crm.users")

MIN_PASSWORD_LENGTH = 12
_ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}  # agent < supervisor < admin
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_INTERFACE = re.compile(r"^[A-Za-z0-9]+/\S{1,120}$")  # PJSIP/agent1, SIP/1001, Local/…


class UserError(ValueError):
    """A user the store refuses; the message is safe to show an administrator."""


def role_allows(role: str, required: str) -> bool:
    """Roles nest: an admin may do what a supervisor may, a supervisor what an agent may."""
    return _ROLE_RANK.get(role, -1) >= _ROLE_RANK[required]


@dataclass(frozen=True, slots=True)
class UserView:
    """A user as the console sees one: never the hash."""

    id: int
    username: str
    display_name: str
    role: str
    interface: str | None
    ui_language: str
    active: bool
    softphone: bool = False  # answers in the console's browser softphone, not a desk phone

    def can(self, required: str) -> bool:
        return role_allows(self.role, required)


def _view(user: User) -> UserView:
    assert user.id is not None
    return UserView(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        interface=user.interface,
        ui_language=user.ui_language,
        active=user.active,
        softphone=user.softphone,
    )


def normalise_username(username: str) -> str:
    return username.strip().lower()


def _check(
    *, role: str | None = None, ui_language: str | None = None, interface: str | None = None
) -> None:
    if role is not None and role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if ui_language is not None and ui_language not in UI_LANGUAGES:
        raise UserError(f"ui_language must be one of {', '.join(UI_LANGUAGES)}")
    if interface is not None and not _INTERFACE.match(interface):
        raise UserError("interface must look like TECH/resource, e.g. PJSIP/agent1")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


class UserService:
    """Users over the SQL store; ``hasher`` carries the argon2 cost (argon2-cffi defaults)."""

    def __init__(self, engine: AsyncEngine, *, hasher: PasswordHasher | None = None) -> None:
        self.engine = engine
        self.hasher = hasher or PasswordHasher()
        self._sessions = session_factory(engine)
        self._decoy: str | None = None

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def create_user(
        self,
        username: str,
        password: str,
        *,
        role: str = "agent",
        display_name: str | None = None,
        interface: str | None = None,
        ui_language: str = "fr",
        softphone: bool = False,
    ) -> UserView:
        name = normalise_username(username)
        if not _USERNAME.match(name):
            raise UserError("a username is 1-64 letters, digits, '.', '_' or '-'")
        _check(role=role, ui_language=ui_language, interface=interface)
        _check_password(password)
        user = User(
            username=name,
            display_name=(display_name or name).strip(),
            role=role,
            password_hash=await self._hash(password),
            interface=interface,
            ui_language=ui_language,
            softphone=softphone,
        )
        try:
            async with self._sessions() as session, session.begin():
                session.add(user)
                await session.flush()
                return _view(user)
        except IntegrityError:
            raise UserError(f"user {name!r} already exists") from None

    async def authenticate(self, username: str, password: str) -> UserView | None:
        """The user if the password matches and the account is active, else None.

        A hash made with weaker parameters than the current ones is replaced on success.
        """
        async with self._sessions() as session:
            result = await session.exec(
                select(User).where(User.username == normalise_username(username))
            )
            user = result.first()
        if user is None or not user.active:
            await self._verify_decoy(password)
            return None
        try:
            await asyncio.to_thread(self.hasher.verify, user.password_hash, password)
        except VerifyMismatchError:
            return None
        except (InvalidHashError, VerificationError) as exc:
            log.error("user %s: stored password hash unusable (%s)", user.username, exc)
            return None
        if self.hasher.check_needs_rehash(user.password_hash):
            await self._store_hash(user.username, await self._hash(password))
        return _view(user)

    async def _verify_decoy(self, password: str) -> None:
        if self._decoy is None:
            self._decoy = await self._hash(secrets.token_urlsafe(16))
        with contextlib.suppress(VerificationError):
            await asyncio.to_thread(self.hasher.verify, self._decoy, password)

    async def _store_hash(self, username: str, password_hash: str) -> None:
        async with self._sessions() as session, session.begin():
            result = await session.exec(select(User).where(User.username == username))
            user = result.first()
            if user is None:
                raise UserError(f"no user {username!r}")
            user.password_hash = password_hash

    async def set_password(self, username: str, password: str) -> None:
        _check_password(password)
        await self._store_hash(normalise_username(username), await self._hash(password))

    async def get(self, username: str) -> UserView | None:
        async with self._sessions() as session:
            result = await session.exec(
                select(User).where(User.username == normalise_username(username))
            )
            user = result.first()
            return None if user is None else _view(user)

    async def by_interface(self, interface: str) -> UserView | None:
        """The active user on a phone interface (the CTI's queue member → agent)."""
        async with self._sessions() as session:
            result = await session.exec(
                select(User).where(User.interface == interface).where(col(User.active).is_(True))
            )
            user = result.first()
            return None if user is None else _view(user)

    async def list_users(self) -> list[UserView]:
        async with self._sessions() as session:
            result = await session.exec(select(User).order_by(col(User.username)))
            return [_view(user) for user in result.all()]

    async def update(
        self,
        username: str,
        *,
        role: str | None = None,
        display_name: str | None = None,
        interface: str | None = None,
        ui_language: str | None = None,
        active: bool | None = None,
        softphone: bool | None = None,
    ) -> UserView:
        """Change what is given (``interface=""`` clears the interface)."""
        _check(role=role, ui_language=ui_language, interface=interface or None)
        async with self._sessions() as session, session.begin():
            result = await session.exec(
                select(User).where(User.username == normalise_username(username))
            )
            user = result.first()
            if user is None:
                raise UserError(f"no user {username!r}")
            if role is not None:
                user.role = role
            if display_name is not None:
                user.display_name = display_name.strip()
            if interface is not None:
                user.interface = interface or None
            if ui_language is not None:
                user.ui_language = ui_language
            if active is not None:
                user.active = active
            if softphone is not None:
                user.softphone = softphone
            return _view(user)
