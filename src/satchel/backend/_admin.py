"""Administration of workspaces and tokens, on a home directly or through a server.

``satchel admin … --home DIR`` works on the store in ``DIR`` (the server may be running: SQLite
serialises writers); ``--url URL --token ADMIN_TOKEN`` asks a running server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from satchel.backend._remote import RemoteBackend
from satchel.core import Core

__all__ = ["AdminOps", "LocalAdmin", "RemoteAdmin"]


class AdminOps(Protocol):
    def create_workspace(self, name: str) -> str:
        """Create workspace ``name``; return its first token."""
        ...

    def create_token(self, workspace: str, *, label: str = "", admin: bool = False) -> str: ...

    def revoke_token(self, token_or_id: str) -> str: ...

    def list_workspaces(self) -> list[str]: ...

    def list_tokens(self, workspace: str | None = None) -> list[dict[str, Any]]: ...

    # -- presigning keys (object storage) -------------------------------------------------------
    def rotate_signing_key(self) -> str:
        """Add a new signing key for presigned URLs; return its id (older keys still verify)."""
        ...

    def retire_signing_key(self, key_id: str) -> None:
        """Invalidate every presigned URL signed with ``key_id``."""
        ...

    def list_signing_keys(self) -> list[dict[str, Any]]: ...


class LocalAdmin:
    def __init__(self, home: str | Path, *, database: str | None = None) -> None:
        self.core = Core.open_home(Path(home).expanduser(), database=database)

    def create_workspace(self, name: str) -> str:
        self.core.workspaces.create(name)
        return self.core.tokens.create(name, label="created with the workspace")

    def create_token(self, workspace: str, *, label: str = "", admin: bool = False) -> str:
        return self.core.tokens.create(workspace, admin=admin, label=label)

    def revoke_token(self, token_or_id: str) -> str:
        return self.core.tokens.revoke(token_or_id)

    def list_workspaces(self) -> list[str]:
        return self.core.workspaces.names()

    def list_tokens(self, workspace: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "id": t.id,
                "workspace": t.workspace,
                "admin": t.admin,
                "label": t.label,
                "created_at": t.created_at,
                "revoked_at": t.revoked_at,
            }
            for t in self.core.tokens.list(workspace)
        ]

    # -- presigning keys (object storage) -------------------------------------------------------
    # A running server notices a new key at once and a retired one within a few seconds.
    def rotate_signing_key(self) -> str:
        return self.core.signer.rotate()

    def retire_signing_key(self, key_id: str) -> None:
        self.core.signer.retire(key_id)

    def list_signing_keys(self) -> list[dict[str, Any]]:
        return [
            {"id": k.id, "created_at": k.created_at, "retired_at": k.retired_at, "active": k.active}
            for k in self.core.signer.list_keys()
        ]


class RemoteAdmin:
    def __init__(self, url: str, token: str) -> None:
        self.backend = RemoteBackend(url, token)

    def create_workspace(self, name: str) -> str:
        return str(self.backend.call("POST", "/workspaces", json={"name": name})["token"])

    def create_token(self, workspace: str, *, label: str = "", admin: bool = False) -> str:
        body = {"workspace": workspace, "label": label, "admin": admin}
        return str(self.backend.call("POST", "/tokens", json=body)["token"])

    def revoke_token(self, token_or_id: str) -> str:
        return str(self.backend.call("POST", "/tokens/revoke", json={"token": token_or_id})["id"])

    def list_workspaces(self) -> list[str]:
        return list(self.backend.call("GET", "/workspaces")["workspaces"])

    def list_tokens(self, workspace: str | None = None) -> list[dict[str, Any]]:
        params = {} if workspace is None else {"workspace": workspace}
        return list(self.backend.call("GET", "/tokens", params=params)["tokens"])

    # -- presigning keys (object storage) -------------------------------------------------------
    def rotate_signing_key(self) -> str:
        return str(self.backend.call("POST", "/signing-keys/rotate")["id"])

    def retire_signing_key(self, key_id: str) -> None:
        self.backend.call("POST", "/signing-keys/retire", json={"id": key_id})

    def list_signing_keys(self) -> list[dict[str, Any]]:
        return list(self.backend.call("GET", "/signing-keys")["keys"])
