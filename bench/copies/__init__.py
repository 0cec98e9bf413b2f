"""The real-video copy-detection benchmark: originals, edited-copy families, systems, metrics."""
