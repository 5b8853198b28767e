"""``/tokens``: create, list and revoke workspace tokens (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from satchel.server._auth import Admin
from satchel.server._deps import CoreDep, in_thread

router = APIRouter(prefix="/tokens", tags=["tokens"])


class NewToken(BaseModel):
    workspace: str = Field(min_length=1, max_length=64)
    label: str = Field(default="", max_length=128)
    admin: bool = False


class CreatedToken(BaseModel):
    id: str
    workspace: str
    token: str = Field(description="The token; shown only once.")


class TokenModel(BaseModel):
    id: str
    workspace: str
    admin: bool
    label: str
    created_at: float
    revoked_at: float | None


class TokenList(BaseModel):
    tokens: list[TokenModel]


class Revoke(BaseModel):
    token: str = Field(
        min_length=1, max_length=128, description="The token (sat_…) or its 12-hex id."
    )


class Revoked(BaseModel):
    id: str


@router.post("", response_model=CreatedToken, status_code=201)
async def create_token(body: NewToken, _admin: Admin, core: CoreDep) -> CreatedToken:
    """A new token for a workspace (admin)."""
    token = await in_thread(core.tokens.create, body.workspace, admin=body.admin, label=body.label)
    return CreatedToken(id=token.split("_")[1], workspace=body.workspace, token=token)


@router.get("", response_model=TokenList)
async def list_tokens(_admin: Admin, core: CoreDep, workspace: str | None = None) -> TokenList:
    """Every token (or one workspace's), without secrets (admin)."""
    infos = await in_thread(core.tokens.list, workspace)
    return TokenList(
        tokens=[
            TokenModel(
                id=i.id,
                workspace=i.workspace,
                admin=i.admin,
                label=i.label,
                created_at=i.created_at,
                revoked_at=i.revoked_at,
            )
            for i in infos
        ]
    )


@router.post("/revoke", response_model=Revoked)
async def revoke_token(body: Revoke, _admin: Admin, core: CoreDep) -> Revoked:
    """Revoke a token at once (admin). The token travels in the body, never in a URL."""
    return Revoked(id=await in_thread(core.tokens.revoke, body.token))
