"""The backend-neutral core: turns, events, the two client dialects' codecs, and the service."""
