"""Engines: what a job does (text, image, stylize; PBR maps and safety as steps), each behind a small interface."""
