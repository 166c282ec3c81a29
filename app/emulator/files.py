"""Files that code interpreter wrote, served by id: `GET /files/{id}` and `GET /files/{id}/content`.

Both classic surfaces serve them with `?api-version=` (Azure OpenAI `/openai/files/{file-id}/content`,
Azure/azure-rest-api-specs AzureOpenAI inference `Files_GetFileContent`; Foundry classic
`{project}/files/{fileId}/content`, azure-ai-agents `FilesOperations.get_content`). The file object is
openai-openapi `OpenAIFile` (`purpose: "assistants_output"` for what a tool produced).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.emulator.http import found, new_id, now

# A 1x1 transparent PNG: what the deterministic "chart" draws.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    content: bytes
    media_type: str
    created_at: int

    def obj(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": "assistants_output",
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """Every file a run produced; forgotten on reset."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}

    def add(self, filename: str, content: bytes, media_type: str) -> StoredFile:
        # Azure's file ids: `assistant-` and 22 letters and digits.
        stored = StoredFile(new_id("assistant").replace("_", "-", 1)[:32], filename, content, media_type, now())
        self.files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile:
        return found(self.files.get(file_id), "file", file_id)

    async def retrieve(self, request: Request) -> Response:
        return JSONResponse(self.get(request.path_params["file_id"]).obj())

    async def content(self, request: Request) -> Response:
        stored = self.get(request.path_params["file_id"])
        return Response(stored.content, media_type=stored.media_type)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/files/{file_id}", self.retrieve, methods=["GET"]),
            Route("/files/{file_id}/content", self.content, methods=["GET"]),
        ]


def written_file(name: str) -> bytes:
    """What the deterministic code writes to `/mnt/data/NAME`: a small CSV."""
    return f"name,value\n{name},42\n".encode()
