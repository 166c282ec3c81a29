"""A local, in-memory Azure: Assistants, Foundry classic, Foundry v2 and a managed-identity endpoint.

It imports nothing else from `app/`: it is an independent implementation of Azure's wire protocol,
so that the bridge and its test double cannot share a misunderstanding.

What an agent answers is deterministic, driven by the last user message (`script.py` lists the
drivers): plain text echoes; `/tool NAME {json}` calls functions; `/sleep MS`, `/fail CODE`,
`/incomplete`; `/ratelimit` (run failed `rate_limit_exceeded`); `/filter prompt` (400 `content_filter`)
and `/filter answer` (ended `incomplete`, reason `content_filter`); `/cite` (citation markers with
`file_citation` and `url_citation` annotations, after a file search); `/mcp NAME {json}` (an MCP call,
approved first: classic `submit_tool_approval`, v2 `mcp_approval_request`; agents `asst_mcp` and
`mcp-agent`); `/image` and `/file NAME` (code interpreter's image and file outputs, served by
`files.py`; on v2, agent `code-agent`, a `code_interpreter_call` and a `container_file_citation`
served from its container, `foundry_v2_code.py`). The agent `flights-demo` replays the seed scenario.
"""

from app.emulator.app import create_emulator_app
from app.emulator.options import EmulatorOptions

__all__ = ["EmulatorOptions", "create_emulator_app"]
