"""The emulator's deterministic "model": what an agent answers, driven by the last user message.

- plain text -> `Echo: <text>`;
- lines `/tool NAME {json}` -> calls of function NAME (several lines: parallel calls); once the outputs
  are back, `Tool NAME returned: <output>`, one line per call;
- `/sleep MS` waits before answering; `/fail CODE` fails the run; `/incomplete` ends it incomplete;
- `/ratelimit` fails the run with `rate_limit_exceeded`, "Rate limit is exceeded. Try again in 20
  seconds." (danny-avila/LibreChat#6728); on a v2 stream an `error` event precedes `response.failed`;
- `/filter prompt` is refused at once with Azure's 400 `content_filter` (`innererror`
  `ResponsibleAIPolicyViolation`, `content_filter_result`); `/filter answer` starts an answer and cuts it
  off: the run ends `incomplete` / the Response `incomplete`, reason `content_filter`;
- `/cite` answers with two citation markers (`【4:0†source】`, `【4:1†source】`) annotated as a
  `file_citation` (file `assistant-cite0`) and a `url_citation` (https://example.com/cited);
- `/mcp NAME {json}` calls tool NAME of the agent's MCP server (its first `mcp` tool): with
  `require_approval: "always"` (the default) the turn stops for an approval first; approved, the
  (fake) server answers `mcp_output()`, and the answer is `MCP NAME returned: <output>`; denied, it is
  `MCP NAME was not approved, so it was not called.`; with `"never"` the call runs at once;
- `/image` runs code interpreter, which draws a chart: an `image` output and an `image_file` content
  part; `/file NAME` writes `/mnt/data/NAME`: the answer links `sandbox:/mnt/data/NAME`, annotated
  `file_path`; both files are served by the files endpoints (`files.py`); on Foundry v2 (an agent
  version with a `code_interpreter` tool) both are files in the conversation's container, cited by
  `container_file_citation` on a `sandbox:/mnt/data/NAME` link (`foundry_v2_code.py`); `/cite` searches
  files first (a `file_search` run step on classic);
- `/recall` answers `Recall: ` and the user messages before this one, joined by ` | ` (`nothing` if none):
  what the agent was given as the conversation so far (a test double's view, not an Azure behaviour);
- the agent named `flights-demo` replays the seed notebook: `my_cat_born_date`, then `get_flights`
  from that date to Easter 2021, then `There are N flights between ...`.

Both the Assistants and the Foundry v2 surfaces turn their state into `Item`s and ask `plan_turn`.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

FLIGHTS_AGENT = "flights-demo"
EASTER_2021 = "2021-04-04"

# The seed notebook's two functions: the one copy (the tests' `tests/support/seed.py` takes them from here).
FLIGHTS_FUNCTIONS: tuple[dict[str, Any], ...] = (
    {
        "name": "get_flights",
        "description": "returns the number of flights between two dates",
        "parameters": {
            "type": "object",
            "properties": {
                "date_1": {"type": "string", "description": "the first date"},
                "date_2": {"type": "string", "description": "the second date"},
            },
            "required": ["date_1", "date_2"],
        },
    },
    {
        "name": "my_cat_born_date",
        "description": "returns my cat's born date",
        "parameters": {
            "type": "object",
            "properties": {"cat_name": {"type": "string", "description": "the cat's name"}},
            "required": [],
        },
    },
)


def flights_tools(shape: Literal["assistants", "responses"]) -> list[dict[str, Any]]:
    """The flights agent's tools, nested for Assistants or flat for Responses."""
    if shape == "assistants":
        return [{"type": "function", "function": {**copy.deepcopy(f), "strict": False}} for f in FLIGHTS_FUNCTIONS]
    return [{"type": "function", **copy.deepcopy(f)} for f in FLIGHTS_FUNCTIONS]


ItemKind = Literal["user", "assistant", "tool_call", "tool_output", "mcp_request", "mcp_approval"]
"""`mcp_request`: an MCP call waiting for approval (`call_id` is the request's id); `mcp_approval`: its
answer (`text` "true" or "false")."""
PlanKind = Literal["reply", "tool_calls", "fail", "incomplete", "mcp_approval"]


@dataclass(frozen=True)
class Item:
    """One conversation item, the same for threads and Responses input."""

    kind: ItemKind
    text: str = ""
    name: str = ""
    arguments: str = ""
    call_id: str = ""


@dataclass(frozen=True)
class PlannedCall:
    name: str
    arguments: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Citation:
    """A marker in the answer's text and its source: a file (`file_id`) or a web page (`url`, `title`)."""

    marker: str
    start: int
    file_id: str = ""
    url: str = ""
    title: str = ""

    @property
    def end(self) -> int:
        return self.start + len(self.marker)


@dataclass(frozen=True)
class McpServer:
    """The agent's MCP tool: its `server_label` and whether each call needs an approval."""

    label: str
    require_approval: str = "always"


@dataclass(frozen=True)
class McpCall:
    """An MCP call of this turn: `approval` is "pending", "approved", "denied" or "never" (no approval
    asked); `output` is the server's answer once it ran; `request_id` the approval request it answers."""

    name: str
    arguments: str
    server_label: str
    approval: str
    output: str | None = None
    request_id: str = ""


def mcp_output(name: str, arguments: str) -> str:
    """What the emulator's fake MCP server answers: a JSON echo of the call."""
    try:
        args: Any = json.loads(arguments)
    except ValueError:
        args = arguments
    return json.dumps({"tool": name, "arguments": args, "result": f"{name} ran"})


RATE_LIMIT_MESSAGE = "Rate limit is exceeded. Try again in 20 seconds."
CITE_FILE_ID = "assistant-cite0"
CITE_URL = "https://example.com/cited"


def prompt_filtered(text: str) -> bool:
    """The user message asks for Azure's prompt filter (`/filter prompt` on a line of its own)."""
    return any(line.strip() == "/filter prompt" for line in text.splitlines())


def _cited(prompt: int, sleep_ms: float) -> Plan:
    head, middle, tail = "The answer is in the file", " and on the web", "."
    file_marker, url_marker = "【4:0†source】", "【4:1†source】"
    text = head + file_marker + middle + url_marker + tail
    citations = (
        Citation(file_marker, len(head), file_id=CITE_FILE_ID),
        Citation(url_marker, len(head + file_marker + middle), url=CITE_URL, title="Cited page"),
    )
    return Plan(
        kind="reply",
        text=text,
        usage=Usage(prompt, words(text)),
        sleep_ms=sleep_ms,
        deltas=(head, file_marker, middle, url_marker, tail),
        citations=citations,
        file_search=True,
    )


@dataclass(frozen=True)
class CodeRun:
    """What code interpreter ran: its `code`, its `logs`, and what it made (an image, a file NAME)."""

    code: str
    logs: str
    image: bool = False
    file_name: str = ""

    @property
    def link(self) -> str:
        return f"sandbox:/mnt/data/{self.file_name}"


def _code(image: bool, name: str, prompt: int, sleep_ms: float) -> Plan:
    if image:
        run = CodeRun("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.savefig('chart.png')", "", True)
        text = "Here is the chart."
    else:
        code = f"open('/mnt/data/{name}', 'w').write('name,value\\n{name},42\\n')"
        run = CodeRun(code, f"wrote /mnt/data/{name}", file_name=name)
        text = f"Download it: [{name}]({run.link})"
    return Plan(kind="reply", text=text, usage=Usage(prompt, words(text)), sleep_ms=sleep_ms, code=run)


@dataclass(frozen=True)
class Plan:
    kind: PlanKind
    usage: Usage
    text: str = ""
    tool_calls: tuple[PlannedCall, ...] = ()
    error_code: str = ""
    error_message: str = ""
    sleep_ms: float = 0.0
    incomplete_reason: str = "max_completion_tokens"
    deltas: tuple[str, ...] = field(default=())
    citations: tuple[Citation, ...] = ()
    """Markers in `text` and what each cites (`/cite`)."""
    code: CodeRun | None = None
    """Code interpreter ran before the answer (`/image`, `/file NAME`)."""
    file_search: bool = False
    """A file search ran before the answer (`/cite`)."""
    mcp_calls: tuple[McpCall, ...] = ()
    """MCP calls waiting for approval (kind `mcp_approval`) or made in this turn (kind `reply`)."""


_TOOL_LINE = re.compile(r"^/tool\s+([A-Za-z0-9_.-]+)\s*(.*)$")
_MCP_LINE = re.compile(r"^/mcp\s+([A-Za-z0-9_.-]+)\s*(.*)$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SLEEP_LINE = re.compile(r"^/sleep\s+(\d+(?:\.\d+)?)\s*$")
_FAIL_LINE = re.compile(r"^/fail(?:\s+(\S+))?\s*$")


def words(text: str) -> int:
    return len(text.split())


def call_usage(prompt_tokens: int, calls: list[dict[str, Any]]) -> Usage:
    """The tokens of the model call that wrote these tool calls: the prompt read, the calls' JSON written."""
    return Usage(prompt_tokens, max(1, sum(words(json.dumps(c, sort_keys=True)) for c in calls)))


def chunk_text(text: str) -> tuple[str, ...]:
    """Split a reply into several deltas (a word and its trailing space each)."""
    pieces = re.findall(r"\S+\s*|\s+", text)
    return tuple(pieces) if pieces else (text,)


def _prompt_tokens(items: list[Item]) -> int:
    return sum(words(i.text) + words(i.name) + words(i.arguments) + 1 for i in items)


def _current_turn(items: list[Item]) -> tuple[str, list[Item]]:
    """The last user message and everything after it (the calls and outputs of this turn)."""
    for index in range(len(items) - 1, -1, -1):
        if items[index].kind == "user":
            return items[index].text, items[index + 1 :]
    return "", list(items)


def _outputs_by_call(turn: list[Item]) -> list[tuple[Item, str]]:
    outputs = {i.call_id: i.text for i in turn if i.kind == "tool_output"}
    return [(call, outputs[call.call_id]) for call in turn if call.kind == "tool_call" and call.call_id in outputs]


def _reply(text: str, prompt: int, sleep_ms: float = 0.0) -> Plan:
    return Plan(kind="reply", text=text, usage=Usage(prompt, words(text)), sleep_ms=sleep_ms, deltas=chunk_text(text))


def _cut(text: str, prompt: int, sleep_ms: float, reason: str = "max_completion_tokens") -> Plan:
    """An answer that stops short: `text` is all of it the client gets."""
    usage = Usage(prompt, words(text))
    return Plan(
        kind="incomplete", text=text, usage=usage, sleep_ms=sleep_ms, incomplete_reason=reason, deltas=chunk_text(text)
    )


def _fail(code: str, message: str, prompt: int, sleep_ms: float) -> Plan:
    return Plan(kind="fail", usage=Usage(prompt, 0), error_code=code, error_message=message, sleep_ms=sleep_ms)


def _calls(calls: list[PlannedCall], prompt: int, sleep_ms: float = 0.0) -> Plan:
    completion = sum(words(c.name) + words(c.arguments) for c in calls)
    return Plan(kind="tool_calls", tool_calls=tuple(calls), usage=Usage(prompt, completion), sleep_ms=sleep_ms)


def _mcp(calls: list[PlannedCall], server: McpServer | None, turn: list[Item], prompt: int, sleep: float) -> Plan:
    """The `/mcp` lines of a turn: ask for approvals, or answer with what the approved calls returned."""
    if server is None:
        return _reply("I have no MCP tool.", prompt, sleep)
    requests = [i for i in turn if i.kind == "mcp_request"]
    if server.require_approval == "never":
        done = [McpCall(c.name, c.arguments, server.label, "never", mcp_output(c.name, c.arguments)) for c in calls]
    elif not requests:
        pending = tuple(McpCall(c.name, c.arguments, server.label, "pending") for c in calls)
        completion = sum(words(c.name) + words(c.arguments) for c in calls)
        return Plan(kind="mcp_approval", usage=Usage(prompt, completion), sleep_ms=sleep, mcp_calls=pending)
    else:
        answers = {i.call_id: i.text == "true" for i in turn if i.kind == "mcp_approval"}
        done = [
            McpCall(
                r.name,
                r.arguments,
                server.label,
                "approved" if answers.get(r.call_id) else "denied",
                mcp_output(r.name, r.arguments) if answers.get(r.call_id) else None,
                r.call_id,
            )
            for r in requests
        ]
    lines = [
        f"MCP {c.name} returned: {c.output}"
        if c.output is not None
        else f"MCP {c.name} was not approved, so it was not called."
        for c in done
    ]
    text = "\n".join(lines)
    return Plan(
        kind="reply",
        text=text,
        usage=Usage(prompt, words(text)),
        sleep_ms=sleep,
        deltas=chunk_text(text),
        mcp_calls=tuple(done),
    )


def plan_turn(
    agent_name: str | None,
    items: list[Item],
    tool_names: set[str] | None = None,
    mcp: McpServer | None = None,
) -> Plan:
    """Decide the agent's next step given the whole conversation so far."""
    prompt = _prompt_tokens(items)
    user_text, turn = _current_turn(items)
    lines = [line.strip() for line in user_text.splitlines()]
    sleep_ms = 0.0
    rest: list[str] = []
    tool_lines: list[PlannedCall] = []
    mcp_lines: list[PlannedCall] = []
    for line in lines:
        if m := _SLEEP_LINE.match(line):
            sleep_ms += float(m.group(1))
        elif m := _FAIL_LINE.match(line):
            code = m.group(1) or "server_error"
            return _fail(code, f"The run failed with a simulated '{code}' error.", prompt, sleep_ms)
        elif line == "/ratelimit":
            return _fail("rate_limit_exceeded", RATE_LIMIT_MESSAGE, prompt, sleep_ms)
        elif line == "/filter answer":
            return _cut("Here is the start of an answer that", prompt, sleep_ms, "content_filter")
        elif line == "/image" or (line.startswith("/file ") and _FILE_NAME.match(line[6:].strip())):
            return _code(line == "/image", line[6:].strip(), prompt, sleep_ms)
        elif line == "/cite":
            return _cited(prompt, sleep_ms)
        elif line == "/recall":
            earlier = [i.text for i in items if i.kind == "user"][:-1]
            return _reply("Recall: " + (" | ".join(earlier) or "nothing"), prompt, sleep_ms)
        elif line == "/incomplete":
            return _cut("Echo: this answer was cut short", prompt, sleep_ms)
        elif m := _MCP_LINE.match(line):
            mcp_lines.append(PlannedCall(m.group(1), m.group(2).strip() or "{}"))
        elif m := _TOOL_LINE.match(line):
            arguments = m.group(2).strip() or "{}"
            tool_lines.append(PlannedCall(m.group(1), arguments))
        elif line:
            rest.append(line)

    if mcp_lines:
        return _mcp(mcp_lines, mcp, turn, prompt, sleep_ms)
    if tool_lines:
        answered = _outputs_by_call(turn)
        if answered:
            return _reply("\n".join(f"Tool {c.name} returned: {out}" for c, out in answered), prompt, sleep_ms)
        missing = [c.name for c in tool_lines if tool_names is not None and c.name not in tool_names]
        if missing:
            return _reply(f"I have no tool named {missing[0]}.", prompt, sleep_ms)
        return _calls(tool_lines, prompt, sleep_ms)

    if agent_name == FLIGHTS_AGENT and "flight" in user_text.lower():
        return _flights(turn, prompt, sleep_ms)

    text = " ".join(rest)
    if not text:
        return _reply(f"Slept {sleep_ms:g} ms." if sleep_ms else "Echo: ", prompt, sleep_ms)
    return _reply(f"Echo: {text}", prompt, sleep_ms)


def _flights(turn: list[Item], prompt: int, sleep_ms: float) -> Plan:
    answered = {call.name: out for call, out in _outputs_by_call(turn)}
    if "my_cat_born_date" not in answered:
        return _calls([PlannedCall("my_cat_born_date", json.dumps({"cat_name": "Mike"}))], prompt, sleep_ms)
    born = _json_field(answered["my_cat_born_date"], "cat_born_date")
    if "get_flights" not in answered:
        args = json.dumps({"date_1": born, "date_2": EASTER_2021})
        return _calls([PlannedCall("get_flights", args)], prompt, sleep_ms)
    flights = _json_field(answered["get_flights"], "flights")
    text = f"There are {flights} flights between your cat Mike's birth date ({born}) and Easter 2021 ({EASTER_2021})."
    return _reply(text, prompt, sleep_ms)


def _json_field(output: str, key: str) -> str:
    try:
        value = json.loads(output)
    except ValueError:
        return output.strip()
    if isinstance(value, dict) and key in value:
        return str(value[key])
    return output.strip()
