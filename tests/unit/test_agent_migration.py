"""An Assistants agent as a v2 prompt-agent definition (field names: docs/reference/carry.md §4)."""

from __future__ import annotations

from app.agent_migration import definition_of


def test_model_instructions_sampling_builtin_and_recorded_function_tools() -> None:
    assistant = {
        "id": "asst_x",
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "temperature": 0.2,
        "top_p": 0.9,
        "tools": [
            {"type": "code_interpreter"},
            {"type": "file_search"},
            {"type": "function", "function": {"name": "own", "parameters": {"type": "object"}}},
            {"type": "bing_grounding"},
        ],
        "tool_resources": {"code_interpreter": {"file_ids": ["file-1"]}, "file_search": {"vector_store_ids": ["vs_1"]}},
        "response_format": {"type": "json_object"},
    }
    recorded = {"own": {"name": "own"}, "sent": {"name": "sent", "description": "d", "parameters": {"type": "object"}}}
    definition, lost = definition_of(assistant, recorded)
    assert definition == {
        "kind": "prompt",
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "temperature": 0.2,
        "top_p": 0.9,
        "tools": [
            {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-1"]}},
            {"type": "file_search", "vector_store_ids": ["vs_1"]},
            {"type": "function", "name": "own", "parameters": {"type": "object"}},
            {"type": "function", "name": "sent", "description": "d", "parameters": {"type": "object"}},
        ],
    }
    assert any("bing_grounding" in line for line in lost) and any("response_format" in line for line in lost)
