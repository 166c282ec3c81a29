"""The Foundry v2 backend: agents by name and version, through a project's Responses API."""
