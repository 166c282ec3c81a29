"""The Python clients of the matrix: openai, LangChain, LlamaIndex, pydantic-ai, the Agents SDK, curl.

Run by `python -m bench.clients` in bench/.clients-venv with BRIDGE_URL set; prints one JSON line per
(client, scenario, backend): {"client", "scenario", "backend", "ok", "detail"}.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

BRIDGE = os.environ["BRIDGE_URL"]
V1 = f"{BRIDGE}/v1"
KEY = "unused-in-open-mode"
BACKENDS = {
    "assistants": ("demo-assistant", "flights-assistant"),
    "foundry": ("demo-agent", "flights-agent"),
    "endpoint": ("demo-endpoint", "flights-endpoint"),
}
QUESTION = "How many flights do we have between my cat Mike born date and Easter 2021?"
BORN = "2015-06-01"
EASTER_2021 = "2021-04-04"
FLIGHTS = f"There are {(date.fromisoformat(EASTER_2021) - date.fromisoformat(BORN)).days} flights"


def my_cat_born_date(cat_name: str = "") -> str:
    """Returns my cat's born date."""
    return json.dumps({"cat_born_date": BORN})


def get_flights(date_1: str, date_2: str) -> str:
    """Returns the number of flights between two dates."""
    return json.dumps({"flights": abs((date.fromisoformat(date_2) - date.fromisoformat(date_1)).days)})


FUNCTIONS: dict[str, Callable[..., str]] = {"my_cat_born_date": my_cat_born_date, "get_flights": get_flights}
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "my_cat_born_date",
            "description": "returns my cat's born date",
            "parameters": {"type": "object", "properties": {"cat_name": {"type": "string"}}, "required": []},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_flights",
            "description": "returns the number of flights between two dates",
            "parameters": {
                "type": "object",
                "properties": {"date_1": {"type": "string"}, "date_2": {"type": "string"}},
                "required": ["date_1", "date_2"],
            },
        },
    },
]
RESPONSES_TOOLS = [{"type": "function", **t["function"]} for t in CHAT_TOOLS]
# What each scenario's last answer must contain.
EXPECT = {
    "chat": "Echo: hello matrix",
    "chat_stream": "Echo: hello matrix",
    "chat_tools": FLIGHTS,
    "chat_multi_turn": "Echo: second question",
    "responses": "Echo: hello matrix",
    "responses_stream": "Echo: hello matrix",
    "responses_tools": FLIGHTS,
    "responses_multi_turn": "Echo: second question",
    # The emulator's `/recall` answers with the user messages the agent was given before it.
    "conversation": "Recall: first question",
    "chat_conversation_id": "Recall: first question",
    "background": "Echo: hello matrix",
    "background_resume": "Echo: hello matrix",
    "background_cancel": "cancelled",
}
HISTORY = [
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "Echo: first question"},
    {"role": "user", "content": "second question"},
]


def call(name: str, arguments: str | dict[str, Any]) -> str:
    args = json.loads(arguments or "{}") if isinstance(arguments, str) else arguments
    return FUNCTIONS[name](**args)


# -- openai ----------------------------------------------------------------------------------------


def openai_client(demo: str, flights: str) -> dict[str, Callable[[], str]]:
    from openai import OpenAI

    client = OpenAI(base_url=V1, api_key=KEY, max_retries=0)

    def chat() -> str:
        return (
            client.chat.completions.create(model=demo, messages=[{"role": "user", "content": "hello matrix"}])
            .choices[0]
            .message.content
            or ""
        )

    def chat_stream() -> str:
        stream = client.chat.completions.create(
            model=demo, messages=[{"role": "user", "content": "hello matrix"}], stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    def chat_tools() -> str:
        messages: list[Any] = [{"role": "user", "content": QUESTION}]
        for _ in range(5):
            message = (
                client.chat.completions.create(model=flights, messages=messages, tools=CHAT_TOOLS).choices[0].message
            )
            if not message.tool_calls:
                return message.content or ""
            messages.append(message.model_dump(exclude_none=True))
            messages += [
                {"role": "tool", "tool_call_id": c.id, "content": call(c.function.name, c.function.arguments)}
                for c in message.tool_calls
            ]
        raise AssertionError("too many tool rounds")

    def chat_multi_turn() -> str:
        return client.chat.completions.create(model=demo, messages=HISTORY).choices[0].message.content or ""

    def responses() -> str:
        return client.responses.create(model=demo, input="hello matrix").output_text

    def responses_stream() -> str:
        with client.responses.stream(model=demo, input="hello matrix") as stream:
            text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
            assert stream.get_final_response().output_text == text
            return text

    def responses_tools() -> str:
        response = client.responses.create(model=flights, input=QUESTION, tools=RESPONSES_TOOLS)
        for _ in range(5):
            calls = [i for i in response.output if i.type == "function_call"]
            if not calls:
                return response.output_text
            outputs = [
                {"type": "function_call_output", "call_id": c.call_id, "output": call(c.name, c.arguments)}
                for c in calls
            ]
            response = client.responses.create(
                model=flights, previous_response_id=response.id, input=outputs, tools=RESPONSES_TOOLS
            )
        raise AssertionError("too many tool rounds")

    def responses_multi_turn() -> str:
        first = client.responses.create(model=demo, input="first question")
        return client.responses.create(model=demo, previous_response_id=first.id, input="second question").output_text

    def conversation() -> str:
        """Create (for the route: `model` in the body), two turns in it, both turns in its items."""
        conv = client.conversations.create(metadata={"matrix": "yes"}, extra_body={"model": demo})
        client.responses.create(model=demo, input="first question", conversation=conv.id)
        second = client.responses.create(model=demo, input="/recall", conversation=conv.id)
        items = client.conversations.items.list(conv.id, order="asc").data
        texts = [part.text for item in items for part in getattr(item, "content", None) or []]
        assert texts == ["first question", "Echo: first question", "/recall", second.output_text], texts
        assert client.conversations.delete(conv.id).deleted
        return second.output_text

    def chat_conversation_id() -> str:
        """X-Conversation-Id: each request carries only the new message."""
        header = {"X-Conversation-Id": f"matrix-{uuid.uuid4().hex}"}
        for text in ("first question", "/recall"):
            reply = client.chat.completions.create(
                model=demo, messages=[{"role": "user", "content": text}], extra_headers=header
            )
        return reply.choices[0].message.content or ""

    def polled(response_id: str) -> Any:
        for _ in range(300):
            response = client.responses.retrieve(response_id)
            if response.status not in ("queued", "in_progress"):
                return response
            time.sleep(0.05)
        raise AssertionError("the background response did not end")

    def background() -> str:
        created = client.responses.create(model=demo, input="/sleep 300\nhello matrix", background=True)
        assert created.status in ("queued", "in_progress"), created.status
        return str(polled(created.id).output_text)

    def background_resume() -> str:
        created = client.responses.create(model=demo, input="/sleep 300\nhello matrix", background=True)
        with client.responses.retrieve(created.id, stream=True) as stream:
            cut = next(iter(stream)).sequence_number  # the connection is cut after the first event
        rest = list(client.responses.retrieve(created.id, stream=True, starting_after=cut))
        assert rest[0].sequence_number == cut + 1 and rest[-1].type == "response.completed", rest
        return "".join(e.delta for e in rest if e.type == "response.output_text.delta")

    def background_cancel() -> str:
        created = client.responses.create(model=demo, input="/sleep 5000\nnever", background=True)
        client.responses.cancel(created.id)
        return str(client.responses.retrieve(created.id).status)

    return locals_of(locals())


def locals_of(scope: dict[str, Any]) -> dict[str, Callable[[], str]]:
    return {name: fn for name, fn in scope.items() if name in EXPECT}


# -- curl ------------------------------------------------------------------------------------------


def curl_client(demo: str, flights: str) -> dict[str, Callable[[], str]]:
    def post(path: str, body: dict[str, Any] | None = None) -> str:
        return curl(path, "-H", "Content-Type: application/json", "-d", json.dumps(body) if body is not None else "")

    def curl(path: str, *args: str) -> str:
        done = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "-N", f"{V1}{path}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def sse(text: str) -> list[dict[str, Any]]:
        return [
            json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"
        ]

    def chat() -> str:
        return json.loads(
            post("/chat/completions", {"model": demo, "messages": [{"role": "user", "content": "hello matrix"}]})
        )["choices"][0]["message"]["content"]

    def chat_stream() -> str:
        out = post(
            "/chat/completions",
            {"model": demo, "stream": True, "messages": [{"role": "user", "content": "hello matrix"}]},
        )
        assert out.rstrip().endswith("data: [DONE]")
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in sse(out) if c["choices"])

    def chat_tools() -> str:
        messages: list[Any] = [{"role": "user", "content": QUESTION}]
        for _ in range(5):
            message = json.loads(
                post("/chat/completions", {"model": flights, "messages": messages, "tools": CHAT_TOOLS})
            )["choices"][0]["message"]
            if not message.get("tool_calls"):
                return str(message["content"])
            messages.append(message)
            messages += [
                {
                    "role": "tool",
                    "tool_call_id": c["id"],
                    "content": call(c["function"]["name"], c["function"]["arguments"]),
                }
                for c in message["tool_calls"]
            ]
        raise AssertionError("too many tool rounds")

    def chat_multi_turn() -> str:
        return json.loads(post("/chat/completions", {"model": demo, "messages": HISTORY}))["choices"][0]["message"][
            "content"
        ]

    def text_of(response: dict[str, Any]) -> str:
        return "".join(
            p["text"]
            for item in response["output"]
            if item["type"] == "message"
            for p in item["content"]
            if p["type"] == "output_text"
        )

    def responses() -> str:
        return text_of(json.loads(post("/responses", {"model": demo, "input": "hello matrix"})))

    def responses_stream() -> str:
        events = sse(post("/responses", {"model": demo, "input": "hello matrix", "stream": True}))
        assert events[-1]["type"] == "response.completed"
        return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")

    def responses_tools() -> str:
        response = json.loads(post("/responses", {"model": flights, "input": QUESTION, "tools": RESPONSES_TOOLS}))
        for _ in range(5):
            calls = [i for i in response["output"] if i["type"] == "function_call"]
            if not calls:
                return text_of(response)
            outputs = [
                {"type": "function_call_output", "call_id": c["call_id"], "output": call(c["name"], c["arguments"])}
                for c in calls
            ]
            response = json.loads(
                post(
                    "/responses",
                    {
                        "model": flights,
                        "previous_response_id": response["id"],
                        "input": outputs,
                        "tools": RESPONSES_TOOLS,
                    },
                )
            )
        raise AssertionError("too many tool rounds")

    def responses_multi_turn() -> str:
        first = json.loads(post("/responses", {"model": demo, "input": "first question"}))
        return text_of(
            json.loads(
                post("/responses", {"model": demo, "previous_response_id": first["id"], "input": "second question"})
            )
        )

    def conversation() -> str:
        conv = json.loads(post("/conversations", {"model": demo}))
        for text in ("first question", "/recall"):
            answer = text_of(json.loads(post("/responses", {"model": demo, "input": text, "conversation": conv["id"]})))
        return answer

    def started(text: str) -> str:
        created = json.loads(post("/responses", {"model": demo, "input": text, "background": True}))
        assert created["status"] in ("queued", "in_progress"), created
        return str(created["id"])

    def background() -> str:
        response_id = started("/sleep 300\nhello matrix")
        for _ in range(300):
            response = json.loads(curl(f"/responses/{response_id}"))
            if response["status"] not in ("queued", "in_progress"):
                return text_of(response)
            time.sleep(0.05)
        raise AssertionError("the background response did not end")

    def background_resume() -> str:
        response_id = started("/sleep 300\nhello matrix")
        rest = sse(curl(f"/responses/{response_id}?stream=true&starting_after=2"))
        assert rest[0]["sequence_number"] == 3 and rest[-1]["type"] == "response.completed", rest
        return "".join(e["delta"] for e in rest if e["type"] == "response.output_text.delta")

    def background_cancel() -> str:
        response_id = started("/sleep 5000\nnever")
        return str(json.loads(post(f"/responses/{response_id}/cancel"))["status"])

    return locals_of(locals())


# -- LangChain -------------------------------------------------------------------------------------


def langchain_client(demo: str, flights: str) -> dict[str, Callable[[], str]]:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    def llm(model: str, **kwargs: Any) -> ChatOpenAI:
        return ChatOpenAI(model=model, base_url=V1, api_key=KEY, max_retries=0, **kwargs)  # type: ignore[arg-type]

    def tools_loop(chat: Any) -> str:
        bound = chat.bind_tools(CHAT_TOOLS)
        messages: list[Any] = [HumanMessage(QUESTION)]
        for _ in range(5):
            answer = bound.invoke(messages)
            if not answer.tool_calls:
                return str(answer.text if isinstance(answer.text, str) else answer.text())
            messages.append(answer)
            messages += [ToolMessage(call(c["name"], c["args"]), tool_call_id=c["id"]) for c in answer.tool_calls]
        raise AssertionError("too many tool rounds")

    def text(message: Any) -> str:
        value = message.text
        return str(value() if callable(value) else value)

    def history() -> list[Any]:
        return [HumanMessage("first question"), AIMessage("Echo: first question"), HumanMessage("second question")]

    def chat() -> str:
        return text(llm(demo).invoke("hello matrix"))

    def chat_stream() -> str:
        return "".join(text(c) for c in llm(demo).stream("hello matrix"))

    def chat_tools() -> str:
        return tools_loop(llm(flights))

    def chat_multi_turn() -> str:
        return text(llm(demo).invoke(history()))

    def responses() -> str:
        return text(llm(demo, use_responses_api=True).invoke("hello matrix"))

    def responses_stream() -> str:
        return "".join(text(c) for c in llm(demo, use_responses_api=True).stream("hello matrix"))

    def responses_tools() -> str:
        return tools_loop(llm(flights, use_responses_api=True, use_previous_response_id=True))

    def responses_multi_turn() -> str:
        return text(llm(demo, use_responses_api=True, use_previous_response_id=True).invoke(history()))

    return locals_of(locals())


# -- LlamaIndex ------------------------------------------------------------------------------------


def llamaindex_client(demo: str, flights: str) -> dict[str, Callable[[], str]]:
    from llama_index.core.llms import ChatMessage
    from llama_index.core.tools import FunctionTool
    from llama_index.llms.openai import OpenAIResponses
    from llama_index.llms.openai_like import OpenAILike

    def like(model: str) -> OpenAILike:
        return OpenAILike(
            model=model, api_base=V1, api_key=KEY, is_chat_model=True, is_function_calling_model=True, max_retries=0
        )

    def responses_llm(model: str) -> OpenAIResponses:
        # OpenAIResponses checks the model name against OpenAI's; a context window given skips that.
        return OpenAIResponses(model=model, api_base=V1, api_key=KEY, max_retries=0, context_window=128000)

    tools = [FunctionTool.from_defaults(fn=my_cat_born_date), FunctionTool.from_defaults(fn=get_flights)]

    def tools_loop(llm: Any) -> str:
        history: list[ChatMessage] = [ChatMessage(role="user", content=QUESTION)]
        for _ in range(5):
            answer = llm.chat_with_tools(tools, chat_history=history)
            calls = llm.get_tool_calls_from_response(answer, error_on_no_tool_call=False)
            if not calls:
                return str(answer.message.content)
            history.append(answer.message)
            for c in calls:
                history.append(
                    ChatMessage(
                        role="tool",
                        content=call(c.tool_name, c.tool_kwargs),
                        additional_kwargs={"tool_call_id": c.tool_id, "name": c.tool_name, "call_id": c.tool_id},
                    )
                )
        raise AssertionError("too many tool rounds")

    hist = [ChatMessage(role=m["role"], content=m["content"]) for m in HISTORY]

    def chat() -> str:
        return str(like(demo).chat([ChatMessage(role="user", content="hello matrix")]).message.content)

    def chat_stream() -> str:
        return "".join(
            c.delta or "" for c in like(demo).stream_chat([ChatMessage(role="user", content="hello matrix")])
        )

    def chat_tools() -> str:
        return tools_loop(like(flights))

    def chat_multi_turn() -> str:
        return str(like(demo).chat(hist).message.content)

    def responses() -> str:
        return str(responses_llm(demo).chat([ChatMessage(role="user", content="hello matrix")]).message.content)

    def responses_stream() -> str:
        return "".join(
            c.delta or "" for c in responses_llm(demo).stream_chat([ChatMessage(role="user", content="hello matrix")])
        )

    def responses_tools() -> str:
        return tools_loop(responses_llm(flights))

    def responses_multi_turn() -> str:
        return str(responses_llm(demo).chat(hist).message.content)

    return locals_of(locals())


# -- pydantic-ai -----------------------------------------------------------------------------------


def pydantic_ai_client(demo: str, flights: str) -> dict[str, Callable[[], str]]:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=V1, api_key=KEY)

    def agent(model: str, responses: bool, tools: bool = False) -> Agent[None, str]:
        kind = OpenAIResponsesModel if responses else OpenAIChatModel
        return Agent(kind(model, provider=provider), tools=[my_cat_born_date, get_flights] if tools else [])

    def stream(a: Agent[None, str]) -> str:
        async def go() -> str:
            async with a.run_stream("hello matrix") as result:
                return "".join([d async for d in result.stream_text(delta=True)])

        return asyncio.run(go())

    def multi(a: Agent[None, str]) -> str:
        first = a.run_sync("first question")
        return a.run_sync("second question", message_history=first.all_messages()).output

    def chat() -> str:
        return agent(demo, False).run_sync("hello matrix").output

    def chat_stream() -> str:
        return stream(agent(demo, False))

    def chat_tools() -> str:
        return agent(flights, False, tools=True).run_sync(QUESTION).output

    def chat_multi_turn() -> str:
        return multi(agent(demo, False))

    def responses() -> str:
        return agent(demo, True).run_sync("hello matrix").output

    def responses_stream() -> str:
        return stream(agent(demo, True))

    def responses_tools() -> str:
        return agent(flights, True, tools=True).run_sync(QUESTION).output

    def responses_multi_turn() -> str:
        return multi(agent(demo, True))

    return locals_of(locals())


# -- the Agents SDK --------------------------------------------------------------------------------


def agents_sdk_client(demo: str, flights: str) -> dict[str, Callable[[], str]]:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    tools = [function_tool(my_cat_born_date), function_tool(get_flights)]

    def agent(model: str, responses: bool, with_tools: bool = False) -> Agent:
        # A client per agent: each scenario runs in its own event loop, and a client's pool is bound to one.
        client = AsyncOpenAI(base_url=V1, api_key=KEY, max_retries=0)
        kind = OpenAIResponsesModel if responses else OpenAIChatCompletionsModel
        return Agent(name="matrix", model=kind(model=model, openai_client=client), tools=tools if with_tools else [])

    def run(a: Agent, text: str) -> str:
        return str(asyncio.run(Runner.run(a, text)).final_output)

    def stream(a: Agent) -> str:
        async def go() -> str:
            result = Runner.run_streamed(a, "hello matrix")
            deltas = [
                e.data.delta
                async for e in result.stream_events()
                if e.type == "raw_response_event" and getattr(e.data, "type", "") == "response.output_text.delta"
            ]
            assert "".join(deltas) == result.final_output, (deltas, result.final_output)
            return str(result.final_output)

        return asyncio.run(go())

    def multi(a: Agent) -> str:
        async def go() -> str:
            first = await Runner.run(a, "first question")
            second = await Runner.run(a, [*first.to_input_list(), {"role": "user", "content": "second question"}])
            return str(second.final_output)

        return asyncio.run(go())

    def chat() -> str:
        return run(agent(demo, False), "hello matrix")

    def chat_stream() -> str:
        return stream(agent(demo, False))

    def chat_tools() -> str:
        return run(agent(flights, False, True), QUESTION)

    def chat_multi_turn() -> str:
        return multi(agent(demo, False))

    def responses() -> str:
        return run(agent(demo, True), "hello matrix")

    def responses_stream() -> str:
        return stream(agent(demo, True))

    def responses_tools() -> str:
        return run(agent(flights, True, True), QUESTION)

    def responses_multi_turn() -> str:
        return multi(agent(demo, True))

    return locals_of(locals())


CLIENTS: dict[str, Callable[[str, str], dict[str, Callable[[], str]]]] = {
    "openai-python": openai_client,
    "curl": curl_client,
    "langchain": langchain_client,
    "llamaindex": llamaindex_client,
    "pydantic-ai": pydantic_ai_client,
    "agents-sdk": agents_sdk_client,
}


def main() -> int:
    wanted = set(sys.argv[1:]) or set(CLIENTS)
    for name, build in CLIENTS.items():
        if name not in wanted:
            continue
        for backend, (demo, flights) in BACKENDS.items():
            try:
                scenarios = build(demo, flights)
            except Exception as exc:  # an import or set-up failure fails every scenario of the client
                for scenario in EXPECT:
                    report(name, scenario, backend, False, f"set-up: {exc!r}")
                continue
            for scenario, run in scenarios.items():
                try:
                    text = run()
                    ok = EXPECT[scenario] in text
                    report(name, scenario, backend, ok, "" if ok else f"expected {EXPECT[scenario]!r}, got {text!r}")
                except Exception as exc:
                    report(
                        name, scenario, backend, False, "".join(traceback.format_exception_only(exc)).strip()[-1500:]
                    )
    return 0


def report(client: str, scenario: str, backend: str, ok: bool, detail: str) -> None:
    print(
        json.dumps({"client": client, "scenario": scenario, "backend": backend, "ok": ok, "detail": detail}), flush=True
    )


if __name__ == "__main__":
    sys.exit(main())
