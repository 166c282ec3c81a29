"""The parameter table: every request parameter of OpenAI's spec has a rule per backend (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.core import params
from app.wire.chat import ChatCompletionRequest
from app.wire.responses import ResponsesRequest

SCHEMAS = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "openai-schemas.json").read_text())


def _properties(name: str) -> set[str]:
    schemas = SCHEMAS["components"]["schemas"] if "components" in SCHEMAS else SCHEMAS
    schema = schemas[name]
    out: set[str] = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        if "$ref" in part:
            out |= _properties(part["$ref"].rsplit("/", 1)[-1])
        out |= set(part.get("properties", {}))
    return out


@pytest.mark.parametrize(
    ("endpoint", "schema"), [("chat", "CreateChatCompletionRequest"), ("responses", "CreateResponse")]
)
def test_every_spec_parameter_has_a_rule(endpoint: str, schema: str) -> None:
    names = [p.name for p in params.TABLES[endpoint]]
    assert len(names) == len(set(names))
    assert _properties(schema) == set(names)


def test_warned_notes_fit_one_header_value() -> None:
    for table in params.TABLES.values():
        for p in table:
            for rule in (p.assistants, p.foundry):
                if rule.status in ("ignored", "dropped"):
                    assert rule.note.isascii() and ";" not in rule.note, p.name


def test_v2_refusals_are_dropped_on_foundry_for_both_endpoints() -> None:
    for table in params.TABLES.values():
        rules = {p.name: p for p in table}
        for name in params.V2_REFUSED:
            assert rules[name].foundry.status == "dropped"
            assert rules[name].assistants.status == "mapped"


def _chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], **fields}
    )


def test_only_set_and_meaningful_values_warn() -> None:
    assert params.unhonoured("chat", "assistants", _chat()) == ()
    harmless = _chat(logprobs=False, n=1, presence_penalty=0, stop=[], service_tier="auto", store=False)
    assert params.unhonoured("chat", "assistants", harmless) == ()
    warned = params.unhonoured("chat", "assistants", _chat(seed=1, logprobs=True, presence_penalty=0.5, stop="x"))
    assert [w.param for w in warned] == ["logprobs", "seed", "stop", "presence_penalty"]
    assert all(w.status == "ignored" for w in warned)


def test_foundry_drops_are_warned_with_their_reason() -> None:
    (warning,) = params.unhonoured("chat", "foundry", _chat(temperature=0.2))
    assert str(warning).startswith("temperature dropped: Foundry v2 refuses it next to agent_reference")
    assert params.unhonoured("chat", "assistants", _chat(temperature=0.2)) == ()


def test_responses_rules_depend_on_the_backend() -> None:
    req = ResponsesRequest.model_validate({"model": "m", "input": "x", "truncation": "disabled", "top_logprobs": 2})
    assert [w.param for w in params.unhonoured("responses", "assistants", req)] == ["truncation", "top_logprobs"]
    assert params.unhonoured("responses", "foundry", req) == ()
    auto = ResponsesRequest.model_validate({"model": "m", "input": "x", "truncation": "auto"})
    assert params.unhonoured("responses", "assistants", auto) == ()


def test_header_joins_one_entry_per_parameter() -> None:
    warned = params.unhonoured("chat", "assistants", _chat(seed=1, stop="x"))
    assert params.header(warned) == (
        "seed ignored: agent runs take no seed parameter; stop ignored: agent runs take no stop parameter"
    )
