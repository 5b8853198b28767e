"""``/workspaces``: who am I, and (admin) list and create workspaces."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from satchel.server._auth import Admin, Caller
from satchel.server._deps import CoreDep, in_thread

router = APIRouter(tags=["workspaces"])


class WhoAmI(BaseModel):
    workspace: str
    admin: bool
    token_id: str


class WorkspaceList(BaseModel):
    workspaces: list[str]


class NewWorkspace(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="[A-Za-z0-9._-]{1,64}")


class CreatedWorkspace(BaseModel):
    workspace: str
    token: str = Field(description="The workspace's first token; shown only once.")


@router.get("/whoami", response_model=WhoAmI)
def whoami(caller: Caller) -> WhoAmI:
    """The workspace the calling token belongs to (never the token)."""
    return WhoAmI(workspace=caller.workspace, admin=caller.admin, token_id=caller.token_id)


@router.get("/workspaces", response_model=WorkspaceList)
async def list_workspaces(_admin: Admin, core: CoreDep) -> WorkspaceList:
    """Every workspace's name (admin)."""
    return WorkspaceList(workspaces=await in_thread(core.workspaces.names))


@router.post("/workspaces", response_model=CreatedWorkspace, status_code=201)
async def create_workspace(body: NewWorkspace, _admin: Admin, core: CoreDep) -> CreatedWorkspace:
    """Create a workspace and its first token (admin)."""

    def work() -> str:
        core.workspaces.create(body.name)
        return core.tokens.create(body.name, label="created with the workspace")

    token = await in_thread(work)
    return CreatedWorkspace(workspace=body.name, token=token)
