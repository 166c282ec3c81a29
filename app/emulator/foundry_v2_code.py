"""Code interpreter on Foundry v2: the `code_interpreter_call` item, the files it leaves in a container,
the `container_file_citation`s that point at them, their stream events, and the container files endpoints.

Sources:
- Item and annotation shapes: openai-openapi `CodeInterpreterToolCall` (`id`, `status`, `container_id`,
  `code`, `outputs`: `logs` | `image` with a `url`) and `ContainerFileCitationBody` (`container_id`,
  `file_id`, `filename`, `start_index`, `end_index`); the call's `outputs` are only filled when the
  request's `include` names `code_interpreter_call.outputs` (openai-openapi `IncludeEnum`), else null.
- Stream events, in OpenAI's order (openai-openapi `ResponseCodeInterpreterCall*Event`):
  `output_item.added`, `code_interpreter_call.in_progress`, `code_interpreter_call_code.delta`...,
  `code_interpreter_call_code.done`, `code_interpreter_call.interpreting`,
  `code_interpreter_call.completed`, `output_item.done`.
- The tool on a prompt agent: azure-ai-projects 2.x `CodeInterpreterTool(container=...)`, where the
  container is a container id or `AutoCodeInterpreterToolParam` (`{"type": "auto", "file_ids": [...]}`);
  "if not provided, the service assumes auto".
- Files: Microsoft Foundry REST reference "Containers - Get a container file content",
  `GET {project}/openai/v1/containers/{container_id}/files/{file_id}/content`, errors as `OpenAI.Error`;
  the file object is openai-openapi `ContainerFileResource` (`object: "container.file"`, `path`,
  `source`). Files a run writes live in its container, shown as `sandbox:/mnt/data/NAME` links (Microsoft
  Q&A "Assistants API vs prompt agents: how to access files": container-scoped, annotated with the
  container and file ids, fetched through the container files API while the container lives).
- One container per conversation: a later turn that runs code reuses the container of the last
  `code_interpreter_call` in its context ("each conversation = separate billable session", Foundry
  code interpreter docs).

The exact 404 text for an unknown container or file is not published; it is the OpenAI error envelope
with `code: "not_found"`, naming the id.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.emulator.files import PNG, written_file
from app.emulator.http import EmulatorHTTPError, list_params, new_id, now, page
from app.emulator.script import CodeRun, chunk_text

INCLUDE_OUTPUTS = "code_interpreter_call.outputs"
CHART = "chart.png"


@dataclass(frozen=True)
class ContainerFile:
    id: str
    container_id: str
    path: str
    content: bytes
    media_type: str
    created_at: int = field(default_factory=now)

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "container.file",
            "created_at": self.created_at,
            "bytes": len(self.content),
            "container_id": self.container_id,
            "path": self.path,
            "source": "assistant",
        }


def _not_found(what: str, ident: str) -> EmulatorHTTPError:
    return EmulatorHTTPError(404, f"{what} with id '{ident}' not found.", param=None, code="not_found")


class Containers:
    """Every code-interpreter container and the files written in it; forgotten on reset."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, ContainerFile]] = {}

    def reset(self) -> None:
        self.files.clear()

    def container_for(self, tool: dict[str, Any], history: list[dict[str, Any]]) -> str:
        """The tool's own container id, else the conversation's (its last code call's), else a new one."""
        if isinstance(tool.get("container"), str):
            container_id: str = tool["container"]
        else:
            used = [i["container_id"] for i in history if i.get("type") == "code_interpreter_call"]
            container_id = used[-1] if used and used[-1] in self.files else new_id("cntr")
        self.files.setdefault(container_id, {})
        return container_id

    def write(self, container_id: str, name: str, content: bytes, media_type: str) -> ContainerFile:
        written = ContainerFile(new_id("cfile"), container_id, f"/mnt/data/{name}", content, media_type)
        self.files.setdefault(container_id, {})[written.id] = written
        return written

    def get(self, container_id: str, file_id: str) -> ContainerFile:
        container = self.files.get(container_id)
        if container is None:
            raise _not_found("Container", container_id)
        found = container.get(file_id)
        if found is None:
            raise _not_found("Container file", file_id)
        return found

    # -- handlers of `{project}/openai/v1/containers/...`

    async def list_files(self, request: Request) -> Response:
        container_id = request.path_params["container_id"]
        if container_id not in self.files:
            raise _not_found("Container", container_id)
        return JSONResponse(page([f.obj() for f in self.files[container_id].values()], **list_params(request)))

    async def retrieve_file(self, request: Request) -> Response:
        p = request.path_params
        return JSONResponse(self.get(p["container_id"], p["file_id"]).obj())

    async def file_content(self, request: Request) -> Response:
        p = request.path_params
        found = self.get(p["container_id"], p["file_id"])
        return Response(found.content, media_type=found.media_type)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/containers/{container_id}/files", self.list_files, methods=["GET"]),
            Route("/containers/{container_id}/files/{file_id}", self.retrieve_file, methods=["GET"]),
            Route("/containers/{container_id}/files/{file_id}/content", self.file_content, methods=["GET"]),
        ]


def code_tool(tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The agent version's `code_interpreter` tool, if it has one."""
    return next((t for t in tools if isinstance(t, dict) and t.get("type") == "code_interpreter"), None)


def echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """The tool as a Response's `tools` shows it: `container` is required there; absent means auto."""
    return {**tool, "container": tool.get("container") or {"type": "auto", "file_ids": []}}


@dataclass(frozen=True)
class CodeOutput:
    """What one code run leaves: its call item, and the answer text with its citations."""

    call: dict[str, Any]
    text: str
    annotations: list[dict[str, Any]]

    @property
    def deltas(self) -> tuple[str, ...]:
        return chunk_text(self.text)


def run_code(run: CodeRun, container_id: str, containers: Containers, include: list[Any]) -> CodeOutput:
    """Run the plan's code in the container: the files it writes, the call item, the cited answer."""
    if run.image:
        made = containers.write(container_id, CHART, PNG, "image/png")
        outputs: list[dict[str, Any]] = [
            {"type": "image", "url": "data:image/png;base64," + base64.b64encode(PNG).decode()}
        ]
        lead = "Here is the chart: "
    else:
        made = containers.write(container_id, run.file_name, written_file(run.file_name), "text/csv")
        outputs = [{"type": "logs", "logs": run.logs}]
        lead = "Download it: "
    link = f"sandbox:{made.path}"
    text = f"{lead}[{made.filename}]({link})"
    start = text.index(link)
    citation = {
        "type": "container_file_citation",
        "container_id": container_id,
        "file_id": made.id,
        "filename": made.filename,
        "start_index": start,
        "end_index": start + len(link),
    }
    call = {
        "id": new_id("ci"),
        "type": "code_interpreter_call",
        "status": "completed",
        "container_id": container_id,
        "code": run.code,
        "outputs": outputs if INCLUDE_OUTPUTS in include else None,
    }
    return CodeOutput(call, text, [citation])


Event = Callable[..., tuple[int, bytes]]


def call_events(event: Event, index: int, item: dict[str, Any]) -> Iterator[tuple[int, bytes]]:
    """The stream events of one `code_interpreter_call`, from `output_item.added` to `output_item.done`."""
    where = {"item_id": item["id"], "output_index": index}
    yield event(
        "response.output_item.added",
        output_index=index,
        item={**item, "status": "in_progress", "code": "", "outputs": None},
    )
    yield event("response.code_interpreter_call.in_progress", **where)
    for line in item["code"].splitlines(keepends=True):
        yield event("response.code_interpreter_call_code.delta", **where, delta=line)
    yield event("response.code_interpreter_call_code.done", **where, code=item["code"])
    yield event("response.code_interpreter_call.interpreting", **where)
    yield event("response.code_interpreter_call.completed", **where)
    yield event("response.output_item.done", output_index=index, item=item)
