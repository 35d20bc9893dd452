"""``GET /api/me``: who is signed in, in which language, and where the push stream stands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from console.deps import Principal, State, current_principal

router = APIRouter(prefix="/api", tags=["me"])


class Me(BaseModel):
    id: int
    username: str
    display_name: str
    role: str
    interface: str | None
    ui_language: str
    session_expires_at: datetime
    push_epoch: str
    push_seq: int  # the last sequence number of the user's stream


@router.get("/me", response_model=Me, summary="The signed-in user")
async def me(principal: Annotated[Principal, Depends(current_principal)], state: State) -> Me:
    user = principal.user
    return Me(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        interface=user.interface,
        ui_language=user.ui_language,
        session_expires_at=datetime.fromtimestamp(principal.session.claims.expires_at, UTC),
        push_epoch=state.hub.epoch,
        push_seq=state.hub.last_seq(user.id),
    )
