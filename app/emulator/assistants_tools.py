"""Run steps of the tools Azure runs itself on classic threads (code interpreter, file search), and what
code interpreter leaves in the answer (an `image_file` part, a `file_path` annotation).

Shapes: openai-openapi `RunStepDetailsToolCallsCodeObject` (`code_interpreter: {input, outputs:
[{type: "logs", logs} | {type: "image", image: {file_id}}]}`), `RunStepDetailsToolCallsFileSearchObject`
(`file_search: {ranking_options, results}`), `MessageContentImageFileObject` (`image_file: {file_id}`)
and `MessageContentTextAnnotationsFilePathObject` (`file_path: {file_id}` over the `sandbox:/mnt/data/...`
link); azure-ai-agents models the same as `RunStepCodeInterpreterToolCall`, `RunStepFileSearchToolCall`,
`MessageImageFileContent` and `MessageTextFilePathAnnotation`. Each step is created, streamed as one
`thread.run.step.delta` per call, and completed before the message step, with its own usage (null only
while a step is in progress: openai-openapi `RunStepCompletionUsage`), counted into the run's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.emulator import script
from app.emulator.assistants_state import Run
from app.emulator.files import PNG, FileStore, written_file
from app.emulator.http import new_id, now


@dataclass
class Made:
    """What the tools leave for the message: parts before its text, and annotations on the text."""

    parts: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)


def _step(run: Run, call: dict[str, Any], prompt_tokens: int) -> None:
    step = run.start_step({"type": "tool_calls", "tool_calls": [call]})
    streamed = {"index": 0, **call}
    if call["type"] == "code_interpreter":  # delta outputs carry their index (`RunStepDeltaCodeInterpreter*`)
        outputs = [{"index": i, **o} for i, o in enumerate(call["code_interpreter"]["outputs"])]
        streamed["code_interpreter"] = {**call["code_interpreter"], "outputs": outputs}
    if call["type"] == "file_search":  # openai-openapi: a delta's `file_search` "is always an empty object"
        streamed["file_search"] = {}
    delta = {"step_details": {"type": "tool_calls", "tool_calls": [streamed]}}
    run.log.emit("thread.run.step.delta", {"id": step["id"], "object": "thread.run.step.delta", "delta": delta})
    usage = run.add_usage(script.call_usage(prompt_tokens, [call]))
    step.update(status="completed", completed_at=now(), usage=usage)
    run.log.emit("thread.run.step.completed", step)


def hosted_steps(run: Run, plan: script.Plan, files: FileStore) -> Made:
    made = Made()
    if plan.file_search:
        results = [{"file_id": script.CITE_FILE_ID, "file_name": f"{script.CITE_FILE_ID}.txt", "score": 0.9}]
        ranking = {"ranker": "default_2024_08_21", "score_threshold": 0.0}
        search = {"ranking_options": ranking, "results": results}
        _step(run, {"id": new_id("call"), "type": "file_search", "file_search": search}, plan.usage.prompt_tokens)
    code = plan.code
    if code is None:
        return made
    outputs: list[dict[str, Any]] = [{"type": "logs", "logs": code.logs}] if code.logs else []
    if code.image:
        image = files.add("chart.png", PNG, "image/png")
        outputs.append({"type": "image", "image": {"file_id": image.id}})
        made.parts.append({"type": "image_file", "image_file": {"file_id": image.id}})
    if code.file_name:
        written = files.add(code.file_name, written_file(code.file_name), "text/csv")
        start = plan.text.index(code.link)
        made.annotations.append(
            {
                "type": "file_path",
                "text": code.link,
                "start_index": start,
                "end_index": start + len(code.link),
                "file_path": {"file_id": written.id},
            }
        )
    interpreter = {"input": code.code, "outputs": outputs}
    call = {"id": new_id("call"), "type": "code_interpreter", "code_interpreter": interpreter}
    _step(run, call, plan.usage.prompt_tokens)
    return made
