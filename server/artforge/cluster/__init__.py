"""ArtForge on a Ray cluster: the worker deployment and the gateway's runner for it."""
