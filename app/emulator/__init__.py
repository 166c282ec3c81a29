"""A local, in-memory Azure: Assistants, Foundry classic, Foundry v2 and a managed-identity endpoint.

It imports nothing else from `app/`: it is an independent implementation of Azure's wire protocol,
so that the bridge and its test double cannot share a misunderstanding.
"""

from app.emulator.app import create_emulator_app
from app.emulator.options import EmulatorOptions

__all__ = ["EmulatorOptions", "create_emulator_app"]
