"""State in Redis: the thread registry, conversations, tool calls, responses, locks; the janitor."""
