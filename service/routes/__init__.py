"""One router per resource: index, query, jobs, videos, health (service/app.py mounts them)."""
