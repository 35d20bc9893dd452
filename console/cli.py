"""``guichet users ...``: console accounts from the command line (mounted by guichet.cli).

Passwords are never arguments (they would sit in the shell history and in ``ps``): they are
read from standard input, asked twice on a terminal, or taken from the first line of a pipe
(``printf '%s\\n' "$PW" | guichet users add ...``).
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from console.security import SessionVersions
from crm_bridge.audit import Actor
from crm_bridge.db import init_db, make_engine
from crm_bridge.users import UserError, UserService, UserView
from guichet.settings import get_settings

users_app = typer.Typer(help="Console users.", no_args_is_help=True)

T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (default: DATABASE_URL / the server settings).",
        show_default=False,
    ),
]


@users_app.callback()
def _users() -> None:
    """Console users: agents, supervisors and administrators."""


class RoleChoice(StrEnum):
    """`crm_bridge.case_models.ROLES` as typer choices (tests check they agree)."""

    agent = "agent"
    supervisor = "supervisor"
    admin = "admin"


class LanguageChoice(StrEnum):
    """`console.i18n.LANGUAGES` as typer choices (tests check they agree)."""

    fr = "fr"
    nl = "nl"
    en = "en"


class PasswordInputError(Exception):
    pass


def read_password(*, confirm: bool = True) -> str:
    """The new password from stdin: typed twice (hidden) on a terminal, else one line."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password (again): ") != first:
            raise PasswordInputError("the two passwords differ")
        password = first
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise PasswordInputError("no password on standard input")
    return password


def _operator() -> Actor:
    """Who ran the command, for the audit trail (no account: the system user's name)."""
    try:
        name = getpass.getuser()
    except Exception:
        name = "unknown"
    return Actor(id=None, username=f"cli:{name}"[:64])


async def _with_users(
    url: str | None, work: Callable[[AsyncEngine, UserService], Awaitable[T]]
) -> T:
    engine = make_engine(url or get_settings().database_url)
    try:
        await init_db(engine)
        return await work(engine, UserService(engine))
    finally:
        await engine.dispose()


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"error: {message}", style="red", markup=False, highlight=False)
    return typer.Exit(code=1)


def _describe(user: UserView) -> str:
    phone = user.interface or "no interface"
    if user.softphone:
        phone += ", browser softphone"
    return f"{user.username} ({user.role}, {phone}, {user.ui_language})"


SOFTPHONE_HELP = (
    "Answer in the console's browser softphone (JsSIP registers as the interface's PJSIP "
    "endpoint; `guichet asterisk render` makes it a WebRTC endpoint), else a desk phone."
)


@users_app.command("add")
def add_command(
    name: Annotated[str, typer.Argument(help="Login name (lower case, digits, . _ -).")],
    role: Annotated[RoleChoice, typer.Option(help="What the user may do.")] = RoleChoice.agent,
    interface: Annotated[
        str | None, typer.Option(help="Phone interface, e.g. PJSIP/agent1.")
    ] = None,
    display_name: Annotated[str | None, typer.Option(help="Name shown in the console.")] = None,
    lang: Annotated[LanguageChoice, typer.Option(help="Console language.")] = LanguageChoice.fr,
    softphone: Annotated[
        bool, typer.Option("--softphone/--desk-phone", help=SOFTPHONE_HELP)
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a user; the password is read from standard input."""
    try:
        password = read_password()
    except PasswordInputError as exc:
        raise _fail(str(exc)) from None

    async def work(_engine: AsyncEngine, users: UserService) -> UserView:
        return await users.create_user(
            name,
            password,
            role=role.value,
            display_name=display_name,
            interface=interface,
            ui_language=lang.value,
            softphone=softphone,
        )

    try:
        user = asyncio.run(_with_users(database_url, work))
    except UserError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"created {_describe(user)}")


@users_app.command("update")
def update_command(
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[RoleChoice | None, typer.Option(help="What the user may do.")] = None,
    interface: Annotated[
        str | None, typer.Option(help='Phone interface, e.g. PJSIP/agent1 ("" clears it).')
    ] = None,
    display_name: Annotated[str | None, typer.Option(help="Name shown in the console.")] = None,
    lang: Annotated[LanguageChoice | None, typer.Option(help="Console language.")] = None,
    softphone: Annotated[
        bool | None,
        typer.Option("--softphone/--desk-phone", help=SOFTPHONE_HELP, show_default=False),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Change what is given and leave the rest (the password: `guichet users passwd`)."""

    async def work(_engine: AsyncEngine, users: UserService) -> UserView:
        return await users.update(
            name,
            role=role.value if role else None,
            display_name=display_name,
            interface=interface,
            ui_language=lang.value if lang else None,
            softphone=softphone,
        )

    try:
        user = asyncio.run(_with_users(database_url, work))
    except UserError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"updated {_describe(user)}")


@users_app.command("list")
def list_command(database_url: DatabaseUrl = None) -> None:
    """Every user, with role, interface and language (never a hash)."""

    async def work(_engine: AsyncEngine, users: UserService) -> list[UserView]:
        return await users.list_users()

    table = Table()
    for column in ("User", "Name", "Role", "Interface", "Softphone", "Language", "Active"):
        table.add_column(column)
    for user in asyncio.run(_with_users(database_url, work)):
        table.add_row(
            user.username,
            user.display_name,
            user.role,
            user.interface or "",
            "yes" if user.softphone else "no",
            user.ui_language,
            "yes" if user.active else "no",
        )
    Console(width=120).print(table)


@users_app.command("passwd")
def passwd_command(
    name: Annotated[str, typer.Argument(help="Login name.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Set a new password (from standard input) and end every open session of the user."""
    try:
        password = read_password()
    except PasswordInputError as exc:
        raise _fail(str(exc)) from None

    async def work(engine: AsyncEngine, users: UserService) -> UserView:
        user = await users.get(name)
        if user is None:
            raise UserError(f"no user {name!r}")
        await users.set_password(user.username, password)
        await SessionVersions(engine).revoke(user.id, actor=_operator(), reason="password changed")
        return user

    try:
        user = asyncio.run(_with_users(database_url, work))
    except UserError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"password of {user.username} changed; their open sessions are ended")
