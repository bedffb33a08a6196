"""Generated from protos/artforge/v1 by protos/generate.py. Do not edit."""
