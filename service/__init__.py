"""The HTTP service: FastAPI front end, job queue (Redis Streams or in-process), workers running the engine."""
