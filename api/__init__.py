"""The REST/OpenAPI face: a FastAPI app over the core."""
