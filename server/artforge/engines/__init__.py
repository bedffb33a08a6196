"""Engines: what a job does (text now; image, stylize and safety later), each behind a small interface."""
