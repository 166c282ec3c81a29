"""The Assistants backend: `asst_*` agents on Azure OpenAI or Foundry classic (threads and runs)."""
