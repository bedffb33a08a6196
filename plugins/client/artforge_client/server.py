"""A plugin's server: the settings it connects with, and what Test Connection reports.

Both plugins keep these four settings in their own preferences (Blender's add-on preferences,
Krita's kritarc) and run Test Connection the same way, on a worker thread into a JobState.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from artforge_client.client import DEFAULT_ADDRESS, Client
from artforge_client.job_state import JobState, describe_error
from artforge_client.v1 import server_pb2


@dataclass(frozen=True)
class ServerSettings:
    address: str = DEFAULT_ADDRESS  # host:port
    token: str = ""
    tls: bool = False
    certificate: str = ""  # PEM file of the CA to trust (self-signed servers); empty: the system's roots

    def client(self) -> Client:
        """OSError if the certificate file cannot be read."""
        certificate = Path(self.certificate).expanduser() if self.tls and self.certificate else None
        return Client(self.address, token=self.token or None, tls=self.tls, root_certificates=certificate)


@dataclass(frozen=True)
class ServerSummary:
    version: str
    address: str
    models: list[str]  # every model, text and image
    image_models: list[str]
    styles: list[str]  # stylize styles, by index: measured names ("3: dark vivid blue and black, busy strokes")
    images_available: bool
    stylize_available: bool
    # One PNG per style, by index (the server's reference picture in that style, 128 x 128);
    # empty when the server sent none (no style models, or a server older than the previews).
    style_previews: list[bytes] = field(default_factory=list)
    # The control type of each registered ControlNet ("" where the server does not know it), and
    # how many controls a job may have (0: a server older than controls).
    control_types: list[str] = field(default_factory=list)
    max_controls: int = 0

    @property
    def sentence(self) -> str:
        parts = [f"Connected to ArtForge {self.version} at {self.address}; models: {', '.join(self.models[:6]) or 'none'}."]
        if not self.images_available:
            parts.append("It has no image model configured.")
        if not self.stylize_available:
            parts.append("It does not offer stylize.")
        return " ".join(parts)


def check_connection(client: Client, state: JobState, style_previews: bool = False) -> None:
    """The worker side of Test Connection: `state` (begun) succeeds with a ServerSummary, or fails
    with a sentence. Never raises. `style_previews` asks for the styles' pictures too (about 1 MB)."""
    try:
        info = client.server_info(style_previews=style_previews)
        models = client.list_models()
    except Exception as error:  # the artist gets a sentence, not a traceback
        state.fail(describe_error(error, client.address))
        return
    styles = sorted(info.styles, key=lambda s: s.index)
    previews = [style.preview_png for style in styles]
    summary = ServerSummary(
        version=info.server_version,
        address=client.address,
        models=[model.name for model in models],
        image_models=[model.name for model in models if model.kind == server_pb2.MODEL_KIND_IMAGE],
        styles=[style.name for style in styles],
        images_available=info.images_available,
        stylize_available=info.stylize_available,
        style_previews=previews if all(previews) else [],
        control_types=[model.control_type for model in models if model.kind == server_pb2.MODEL_KIND_CONTROLNET],
        max_controls=info.limits.max_controls,
    )
    state.succeed(summary, summary.sentence)
