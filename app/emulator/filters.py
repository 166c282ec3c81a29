"""Azure's content filter: the 400 that refuses a filtered prompt, and its `content_filter_result`.

The body is the one Azure OpenAI answers for a prompt its policy filters, as quoted in many client
issues (e.g. openai/openai-python#1200-era reports, langchain-ai/langchain "content_filter" reports) and
declared by the Azure OpenAI OpenAPI (`errorBase` + `innerError` with `code:
"ResponsibleAIPolicyViolation"`, `content_filter_result(s)`; docs/reference/azure-wire.md §1.8):
`{"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content
management policy. ...", "type": null, "param": "prompt", "code": "content_filter", "status": 400,
"innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {<category>:
{"filtered": bool, "severity": "safe|low|medium|high"}, "jailbreak": {"filtered", "detected"}}}}}`.
`type` is null on Azure's body; the emulator keeps it so.
"""

from __future__ import annotations

from app.emulator.http import EmulatorHTTPError

FILTERED_PROMPT = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
    "Please modify your prompt and retry. To learn more about our content filtering policies please read "
    "our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)


def content_filter_result() -> dict[str, dict[str, object]]:
    """A result with one filtered category (violence, medium), the rest safe."""
    return {
        "hate": {"filtered": False, "severity": "safe"},
        "jailbreak": {"filtered": False, "detected": False},
        "self_harm": {"filtered": False, "severity": "safe"},
        "sexual": {"filtered": False, "severity": "safe"},
        "violence": {"filtered": True, "severity": "medium"},
    }


def prompt_refused() -> EmulatorHTTPError:
    innererror = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": content_filter_result()}
    return EmulatorHTTPError(
        400,
        FILTERED_PROMPT,
        type=None,
        param="prompt",
        code="content_filter",
        extra={"status": 400, "innererror": innererror},
    )
