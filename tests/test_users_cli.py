"""``guichet users add|list|passwd``: passwords from stdin only (asked twice on a terminal),
stored as argon2 hashes, and a password change ends the user's open sessions."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from console.cli import LanguageChoice, RoleChoice, users_app
from console.i18n import LANGUAGES
from console.security import (
    InvalidToken,
    SessionManager,
    SessionVersions,
    TokenSigner,
    user_subject,
)
from crm_bridge.audit import AuditLog
from crm_bridge.case_models import ROLES
from crm_bridge.db import make_engine
from crm_bridge.users import UserService, UserView

PASSWORD = "Een lang genoeg wachtwoord"
SECRET = b"cli-test-secret-" + b"z" * 32


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'users.db'}"


def run(db_url: str, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(users_app, [*args, "--database-url", db_url], input=stdin)
    return result.exit_code, result.output


async def _authenticate(db_url: str, username: str, password: str) -> UserView | None:
    engine = make_engine(db_url)
    try:
        return await UserService(engine).authenticate(username, password)
    finally:
        await engine.dispose()


def test_add_reads_the_password_from_stdin_and_stores_only_a_hash(db_url: str) -> None:
    code, output = run(
        db_url,
        "add",
        "Anne.Lambert",
        "--role",
        "agent",
        "--interface",
        "PJSIP/agent1",
        "--display-name",
        "Anne Lambert",
        "--lang",
        "nl",
        stdin=PASSWORD + "\n",
    )
    assert code == 0, output
    assert output.strip() == "created anne.lambert (agent, PJSIP/agent1, nl)"
    assert PASSWORD not in output
    user = asyncio.run(_authenticate(db_url, "anne.lambert", PASSWORD))
    assert user is not None
    assert (user.role, user.interface, user.ui_language, user.display_name) == (
        "agent",
        "PJSIP/agent1",
        "nl",
        "Anne Lambert",
    )
    code, listing = run(db_url, "list")
    assert code == 0 and "anne.lambert" in listing and "PJSIP/agent1" in listing
    assert "argon2" not in listing


def test_the_choices_are_the_models_roles_and_languages() -> None:
    assert tuple(choice.value for choice in RoleChoice) == ROLES
    assert tuple(choice.value for choice in LanguageChoice) == LANGUAGES


def test_a_password_is_never_an_argument(db_url: str) -> None:
    code, output = run(db_url, "add", "anne", "--password", PASSWORD)
    assert code == 2 and "No such option" in output


@pytest.mark.parametrize(
    ("args", "stdin", "expected_code", "message"),
    [
        (("add", "anne"), "", 1, "no password on standard input"),
        (("add", "anne"), "short\n", 1, "at least 12 characters"),
        (("add", "anne", "--role", "boss"), PASSWORD + "\n", 2, "Invalid value"),
        (("add", "anne", "--lang", "de"), PASSWORD + "\n", 2, "Invalid value"),
        (("add", "anne", "--interface", "agent1"), PASSWORD + "\n", 1, "PJSIP/agent1"),
        (("passwd", "nobody"), PASSWORD + "\n", 1, "no user 'nobody'"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    db_url: str, args: tuple[str, ...], stdin: str, expected_code: int, message: str
) -> None:
    code, output = run(db_url, *args, stdin=stdin)
    assert code == expected_code, output
    assert message in output


def test_a_user_cannot_be_added_twice(db_url: str) -> None:
    assert run(db_url, "add", "anne", stdin=PASSWORD + "\n")[0] == 0
    code, output = run(db_url, "add", "ANNE", stdin=PASSWORD + "\n")
    assert code == 1 and "already exists" in output


def test_passwd_changes_the_password_and_ends_open_sessions(db_url: str) -> None:
    assert run(db_url, "add", "anne", "--role", "supervisor", stdin=PASSWORD + "\n")[0] == 0

    async def open_session() -> str:
        engine = make_engine(db_url)
        try:
            users = UserService(engine)
            session = await SessionManager(
                users, SessionVersions(engine), TokenSigner(SECRET)
            ).login("anne", PASSWORD)
            assert session is not None
            return session.token
        finally:
            await engine.dispose()

    token = asyncio.run(open_session())
    code, output = run(db_url, "passwd", "anne", stdin="Un tout nouveau mot de passe\n")
    assert code == 0, output
    assert "open sessions are ended" in output

    async def check() -> None:
        engine = make_engine(db_url)
        try:
            users = UserService(engine)
            with pytest.raises(InvalidToken, match="revoked"):
                await SessionManager(users, SessionVersions(engine), TokenSigner(SECRET)).resolve(
                    token
                )
            assert await users.authenticate("anne", PASSWORD) is None
            user = await users.authenticate("anne", "Un tout nouveau mot de passe")
            assert user is not None
            trail = await AuditLog(engine).entries(
                subject=user_subject(user.id), action="session.revoked"
            )
            assert len(trail) == 1 and trail[0].reason == "password changed"
            assert trail[0].actor.startswith("cli:")
        finally:
            await engine.dispose()

    asyncio.run(check())


# --- on a real terminal -------------------------------------------------------------------

CLI = "from console.cli import users_app; users_app(prog_name='guichet users')"


def _in_terminal(args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its controlling terminal, typing ``answers``
    at each password prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its terminal
        os.execv(sys.executable, [sys.executable, "-c", CLI, *args])
    output = b""

    def read_more() -> bool:
        nonlocal output
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            raise AssertionError(f"the CLI went silent: {output!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child has exited and closed the terminal
            return False
        output += chunk
        return bool(chunk)

    try:
        for number, answer in enumerate(answers, start=1):
            while output.count(b"Password") < number:
                if not read_more():
                    break
            os.write(fd, answer.encode() + b"\n")
        while read_more():
            pass
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_on_a_terminal_the_password_is_asked_twice_and_never_echoed(db_url: str) -> None:
    code, output = _in_terminal(
        ["add", "anne", "--database-url", db_url], [PASSWORD, "Something else entirely"]
    )
    assert code == 1 and "the two passwords differ" in output
    code, output = _in_terminal(["add", "anne", "--database-url", db_url], [PASSWORD, PASSWORD])
    assert code == 0 and "created anne" in output, output
    assert "Password (again)" in output
    assert PASSWORD not in output  # echo was off
    assert asyncio.run(_authenticate(db_url, "anne", PASSWORD)) is not None
