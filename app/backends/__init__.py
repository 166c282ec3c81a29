"""Backends: how the bridge talks to Azure (HTTP, auth, retries) and plays turns on each kind of agent."""
