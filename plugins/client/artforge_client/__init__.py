"""The ArtForge client: grpcio and protobuf only, shared by the CLI and the Blender and Krita plugins."""

from artforge_client.client import DEFAULT_ADDRESS, ArtForgeError, Client, ImageResult, JobStream

__all__ = ["DEFAULT_ADDRESS", "ArtForgeError", "Client", "ImageResult", "JobStream"]
