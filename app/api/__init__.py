"""The HTTP surface (the only package that imports FastAPI): routes, dependencies, SSE, error rendering."""
