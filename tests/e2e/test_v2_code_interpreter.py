"""Code interpreter on a Foundry v2 route, through the official openai client against the bridge: the
`code_interpreter_call` items and `container_file_citation`s of `/v1/responses`, the files as chat
`message.annotations`, `GET /v1/files/{id}/content` relayed from the container to the owner of the turn
only, and citation markers on the v2 pass-through by the route's `citation_markers`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.bridge import ENTRA, Bridge, routes_for, running_bridge
from tests.support.servers import ServerThread
from tests.support.spec import validate

OWNER_A = "key-of-coders-team-a-0123"
OWNER_B = "key-of-coders-team-b-0123"
OUTPUTS = ["code_interpreter_call.outputs"]


def _routes(emulator_url: str) -> dict[str, Any]:
    project = f"{emulator_url}/api/projects/demo"
    agent = {"endpoint": project, "agent": {"name": "code-agent", "version": "1"}, "auth": ENTRA}
    demo = {"endpoint": project, "agent": {"name": "demo-agent", "version": "1"}, "auth": ENTRA}
    return routes_for(
        emulator_url,
        **{
            "code-agent": agent,
            "cite-keep": {**demo, "citation_markers": "keep"},
            "cite-strip": {**demo, "citation_markers": "strip"},
        },
    )


@pytest.fixture
def coders(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Iterator[Bridge]:
    keys = [{"name": "team-a", "key": OWNER_A}, {"name": "team-b", "key": OWNER_B}]
    with running_bridge(emulator.url, redis_url, redis_prefix, routes=_routes(emulator.url), keys=keys) as bridge:
        yield bridge


def _events(client: openai.OpenAI, **body: Any) -> list[dict[str, Any]]:
    events = [e.model_dump(mode="json", exclude_unset=True) for e in client.responses.create(**body, stream=True)]
    for event in events:
        validate(event, "ResponseStreamEvent")
    return events


def _container_citation(response: dict[str, Any]) -> dict[str, Any]:
    part = response["output"][-1]["content"][0]
    [note] = part["annotations"]
    assert note["type"] == "container_file_citation"
    assert part["text"][note["start_index"] : note["end_index"]] == f"sandbox:/mnt/data/{note['filename']}"
    return note


def _upstream(emulator: ServerThread, note: dict[str, Any]) -> httpx.Response:
    """What Azure itself serves for the cited file (the container files endpoint, Entra token)."""
    path = f"/api/projects/demo/openai/v1/containers/{note['container_id']}/files/{note['file_id']}/content"
    return httpx.get(emulator.url + path, headers={"Authorization": "Bearer t"}, timeout=10)


@pytest.mark.parametrize("stream", [False, True])
def test_responses_pass_code_calls_and_container_citations_through(
    coders: Bridge, emulator: ServerThread, stream: bool
) -> None:
    client = coders.client(api_key=OWNER_A)
    body: dict[str, Any] = {"model": "code-agent", "input": "/file report.csv", "include": OUTPUTS}
    if stream:
        events = _events(client, **body)
        kinds = [e["type"] for e in events]
        for kind in (
            "response.code_interpreter_call.in_progress",
            "response.code_interpreter_call_code.done",
            "response.code_interpreter_call.interpreting",
            "response.code_interpreter_call.completed",
        ):
            assert kind in kinds
        assert kinds.index("response.output_text.annotation.added") < kinds.index("response.output_text.done")
        response = events[-1]["response"]
    else:
        response = client.responses.create(**body).model_dump(mode="json", exclude_unset=True)
    validate(response, "Response")
    assert response["model"] == "code-agent"
    call, _ = response["output"]
    assert call["type"] == "code_interpreter_call" and call["outputs"] == [
        {"type": "logs", "logs": "wrote /mnt/data/report.csv"}
    ]
    note = _container_citation(response)
    assert note["container_id"] == call["container_id"]
    relayed = client.files.content(note["file_id"])
    assert relayed.content == _upstream(emulator, note).content == b"name,value\nreport.csv,42\n"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("ask", ["/image", "/file report.csv"])
def test_chat_gets_container_files_as_annotations(
    coders: Bridge, emulator: ServerThread, stream: bool, ask: str
) -> None:
    client = coders.client(api_key=OWNER_A)
    messages: Any = [{"role": "user", "content": ask}]
    if stream:
        chunks = list(client.chat.completions.create(model="code-agent", messages=messages, stream=True))
        for chunk in chunks:
            validate(chunk.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionStreamResponse")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        raw = [a for c in chunks if c.choices for a in (c.choices[0].delta.model_extra or {}).get("annotations") or []]
    else:
        completion = client.chat.completions.create(model="code-agent", messages=messages)
        validate(completion.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
        text = completion.choices[0].message.content or ""
        raw = [a.model_dump(mode="json") for a in completion.choices[0].message.annotations or []]
    [note] = raw
    cited = note["url_citation"]
    name = "chart.png" if ask == "/image" else "report.csv"
    assert text[cited["start_index"] : cited["end_index"]] == f"sandbox:/mnt/data/{name}"
    assert cited["file_id"].startswith("cfile_") and cited["title"] == name
    assert cited["url"].endswith(f"/v1/files/{cited['file_id']}/content")
    relayed = client.files.content(cited["file_id"])
    assert relayed.content.startswith(b"\x89PNG" if ask == "/image" else b"name,value")


def test_a_container_file_is_relayed_only_to_the_owner_of_the_turn(coders: Bridge) -> None:
    response = coders.client(api_key=OWNER_A).responses.create(model="code-agent", input="/file secret.csv")
    note = _container_citation(response.model_dump(mode="json"))
    coders.reset_stats()
    with pytest.raises(openai.NotFoundError) as info:
        coders.client(api_key=OWNER_B).files.content(note["file_id"])
    assert info.value.code == "not_found"
    assert not any("containers" in op for op in coders.emulator_stats())  # never reached Azure
    assert coders.client(api_key=OWNER_A).files.content(note["file_id"]).content == b"name,value\nsecret.csv,42\n"
    assert "GET /api/projects/{project}/openai/v1/containers/{container_id}/files/{file_id}/content" in (
        coders.emulator_stats()
    )
    # A container Azure no longer has (they expire): the owner gets a 404 envelope, not a 5xx.
    coders.fault(path="/containers/", status=404, count=1)
    with pytest.raises(openai.NotFoundError) as gone:
        coders.client(api_key=OWNER_A).files.content(note["file_id"])
    validate(gone.value.response.json()["error"], "Error")


def _cited(client: openai.OpenAI, model: str, stream: bool) -> dict[str, Any]:
    if not stream:
        return client.responses.create(model=model, input="/cite").model_dump(mode="json", exclude_unset=True)
    events = _events(client, model=model, input="/cite")
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done = next(e for e in events if e["type"] == "response.output_text.done")
    added = [e["annotation"] for e in events if e["type"] == "response.output_text.annotation.added"]
    response = events[-1]["response"]
    part = response["output"][-1]["content"][0]
    # What the stream showed is what the final Response says.
    assert deltas == done["text"] == part["text"]
    assert added == part["annotations"]
    return response


def _spans(part: dict[str, Any]) -> list[str]:
    """The text each annotation points at (`index`-only kinds: the three characters from the index)."""
    text = part["text"]
    return [
        text[a["start_index"] : a["end_index"]] if "start_index" in a else text[a["index"] : a["index"] + 3]
        for a in part["annotations"]
    ]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "shown"),
    [("demo-agent", ["[1]", "[2]"]), ("cite-keep", None), ("cite-strip", None)],
)
def test_v2_responses_markers_follow_the_route_setting(
    coders: Bridge, model: str, shown: list[str] | None, stream: bool
) -> None:
    client = coders.client(api_key=OWNER_A)
    response = _cited(client, model, stream)
    validate(response, "Response")
    part = response["output"][-1]["content"][0]
    stored = client.responses.retrieve(response["id"]).model_dump(mode="json", exclude_unset=True)
    assert stored["output"][-1]["content"][0] == part  # GET shows what the create showed
    assert {a["type"] for a in part["annotations"]} == {"file_citation", "url_citation"}
    if model == "cite-keep":  # relayed as Azure sent it
        assert part["text"] == "The answer is in the file【4:0†source】 and on the web【4:1†source】."
        assert _spans(part)[1] == "【4:1†source】"
    elif model == "cite-strip":
        assert part["text"] == "The answer is in the file and on the web."
        url = next(a for a in part["annotations"] if a["type"] == "url_citation")
        assert url["start_index"] == url["end_index"] == len("The answer is in the file and on the web")
    else:
        assert part["text"] == "The answer is in the file[1] and on the web[2]."
        assert _spans(part) == shown


def test_a_chat_follow_up_after_a_code_turn_is_one_request_on_the_chain(coders: Bridge) -> None:
    client = coders.client(api_key=OWNER_A)
    messages: list[Any] = [{"role": "user", "content": "/image"}]
    first = client.chat.completions.create(model="code-agent", messages=messages)
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "/file next.csv"},
    ]
    coders.reset_stats()
    second = client.chat.completions.create(model="code-agent", messages=messages)
    creates = [r for r in coders.emulator_requests() if r["operation"].endswith("/openai/v1/responses")]
    assert len(creates) == 1 and creates[0]["body"]["previous_response_id"]
    assert creates[0]["body"]["input"] == [{"type": "message", "role": "user", "content": "/file next.csv"}]
    [note] = second.choices[0].message.annotations or []
    file_id = (note.url_citation.model_extra or {})["file_id"]
    assert client.files.content(file_id).content == b"name,value\nnext.csv,42\n"
