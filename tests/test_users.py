"""Console users on SQLite and PostgreSQL: argon2 hashes (never the password), roles, logins."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from test_cases_fixtures import *  # noqa: F403  (the pytest fixtures)
from test_cases_fixtures import FAST_HASHER

from crm_bridge.users import UserError, UserService, role_allows

PASSWORD = "Zeg eens 'appelflap'"


async def stored_hash(engine: AsyncEngine, username: str) -> str:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT password_hash FROM app_user WHERE username = :u"), {"u": username}
        )
        return str(result.scalar_one())


async def test_a_password_is_stored_as_an_argon2id_hash_only(case_engine: AsyncEngine) -> None:
    users = UserService(case_engine)  # the default (production) parameters
    user = await users.create_user(
        "Jan.Peeters",
        PASSWORD,
        role="supervisor",
        display_name="Jan Peeters",
        interface="PJSIP/agent1",
        ui_language="nl",
    )
    assert (user.username, user.role, user.interface, user.ui_language, user.active) == (
        "jan.peeters",
        "supervisor",
        "PJSIP/agent1",
        "nl",
        True,
    )
    hashed = await stored_hash(case_engine, "jan.peeters")
    assert hashed.startswith("$argon2id$")
    assert PASSWORD not in hashed and "appelflap" not in hashed
    async with case_engine.connect() as conn:  # nowhere else in the row either
        row = (await conn.execute(text("SELECT * FROM app_user"))).one()
    assert not any(isinstance(value, str) and "appelflap" in value for value in row)
    assert "password_hash" not in repr(user)


async def test_login_checks_the_password_and_the_account(case_engine: AsyncEngine) -> None:
    users = UserService(case_engine, hasher=FAST_HASHER)
    created = await users.create_user("marie", PASSWORD)
    assert await users.authenticate("MARIE ", PASSWORD) == created
    assert await users.authenticate("marie", PASSWORD.upper()) is None
    assert await users.authenticate("nobody", PASSWORD) is None
    await users.update("marie", active=False)
    assert await users.authenticate("marie", PASSWORD) is None


async def test_a_hash_with_old_parameters_is_replaced_at_the_next_login(
    case_engine: AsyncEngine,
) -> None:
    weak = UserService(case_engine, hasher=FAST_HASHER)
    await weak.create_user("marie", PASSWORD)
    old = await stored_hash(case_engine, "marie")
    stronger = UserService(
        case_engine, hasher=PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    )
    assert await stronger.authenticate("marie", PASSWORD) is not None
    new = await stored_hash(case_engine, "marie")
    assert new != old and "m=2048,t=2,p=1" in new
    assert await stronger.authenticate("marie", PASSWORD) is not None
    assert await stored_hash(case_engine, "marie") == new  # not rehashed again


async def test_set_password(case_engine: AsyncEngine) -> None:
    users = UserService(case_engine, hasher=FAST_HASHER)
    await users.create_user("marie", PASSWORD)
    await users.set_password("marie", "un autre mot de passe")
    assert await users.authenticate("marie", PASSWORD) is None
    assert await users.authenticate("marie", "un autre mot de passe") is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"username": "x", "password": "short"}, "at least 12"),
        ({"username": "bad name", "password": PASSWORD}, "username"),
        (
            {"username": "x", "password": PASSWORD, "role": "root"},
            "role must be one of agent, supervisor, admin",
        ),
        ({"username": "x", "password": PASSWORD, "ui_language": "de"}, "ui_language"),
        ({"username": "x", "password": PASSWORD, "interface": "agent1"}, "PJSIP/agent1"),
    ],
)
async def test_bad_users_are_refused_clearly(
    case_engine: AsyncEngine, kwargs: dict[str, Any], message: str
) -> None:
    users = UserService(case_engine, hasher=FAST_HASHER)
    with pytest.raises(UserError, match=message):
        await users.create_user(**kwargs)
    assert await users.list_users() == []


async def test_a_username_is_taken_once(case_engine: AsyncEngine) -> None:
    users = UserService(case_engine, hasher=FAST_HASHER)
    await users.create_user("marie", PASSWORD)
    with pytest.raises(UserError, match="already exists"):
        await users.create_user("Marie", PASSWORD)


async def test_the_agent_on_a_phone_interface(case_engine: AsyncEngine) -> None:
    users = UserService(case_engine, hasher=FAST_HASHER)
    agent = await users.create_user("an", PASSWORD, interface="PJSIP/agent1")
    assert await users.by_interface("PJSIP/agent1") == agent
    await users.update("an", interface="")
    assert await users.by_interface("PJSIP/agent1") is None


def test_roles_nest() -> None:
    assert role_allows("admin", "supervisor") and role_allows("supervisor", "agent")
    assert not role_allows("agent", "supervisor") and not role_allows("unknown", "agent")
