"""OpenAI request models: generous on input (extra fields allowed), strict on the fields we use."""
