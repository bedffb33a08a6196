"""ArtForge: a gRPC model server for text and image generation, for artists' tools."""

__version__ = "0.1.0"
