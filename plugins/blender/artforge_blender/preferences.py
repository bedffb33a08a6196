"""Add-on preferences: where the server is and how to authenticate, plus Test Connection."""

from __future__ import annotations

from collections.abc import Callable

import bpy

from artforge_client import DEFAULT_ADDRESS
from artforge_client.job_state import JobSnapshot
from artforge_client.server import ServerSettings, check_connection

from . import jobs
from .connection import address_problem

ADDON = __package__  # "bl_ext.<repo>.artforge_blender" when installed as an extension


class ArtForgePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    address: bpy.props.StringProperty(name="Server", description="host:port of the ArtForge server", default=DEFAULT_ADDRESS)
    token: bpy.props.StringProperty(name="Token", description="Bearer token, if the server needs one", subtype="PASSWORD")
    use_tls: bpy.props.BoolProperty(name="TLS", description="Connect with TLS (the server must have a certificate)")
    certificate: bpy.props.StringProperty(
        name="CA certificate", description="PEM file to trust for a self-signed server; empty: the system's", subtype="FILE_PATH"
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "address")
        layout.prop(self, "token")
        row = layout.row()
        row.prop(self, "use_tls")
        sub = row.row()
        sub.enabled = self.use_tls
        sub.prop(self, "certificate")
        from .panels import draw_job  # panels imports this module

        draw_job(layout, "connection", ARTFORGE_OT_test_connection.bl_idname, "LINKED")


def server_settings(context: bpy.types.Context) -> ServerSettings:
    prefs = context.preferences.addons[ADDON].preferences
    return ServerSettings(prefs.address.strip(), prefs.token.strip(), prefs.use_tls, bpy.path.abspath(prefs.certificate))


def start_job(
    operator: bpy.types.Operator,
    context: bpy.types.Context,
    kind: str,
    label: str,
    work: Callable[[jobs.Job, ServerSettings], None],
    update: Callable[[jobs.Job, JobSnapshot], str | None] | None = None,
) -> set[str]:
    """The checks every job operator makes before starting: address, online access, one at a time."""
    settings = server_settings(context)
    problem = address_problem(settings.address, bpy.app.online_access)
    if problem is not None:
        operator.report({"ERROR"}, problem)
        return {"CANCELLED"}
    if jobs.start(kind, label, lambda job: work(job, settings), update) is None:
        kind, _, per_object = kind.partition(" ")  # "texture 42": one texture job per object
        which = " for this object" if per_object else ""
        operator.report({"WARNING"}, f"An ArtForge {kind} job is still running{which}: wait for it or cancel it.")
        return {"CANCELLED"}
    return {"FINISHED"}


def _connection_work(job: jobs.Job, settings: ServerSettings) -> None:
    with settings.client() as client:
        check_connection(client, job.state)


class ARTFORGE_OT_test_connection(bpy.types.Operator):
    bl_idname = "artforge.test_connection"
    bl_label = "Test Connection"
    bl_description = "Ask the server for its version and models, with these settings"

    def execute(self, context: bpy.types.Context) -> set[str]:
        return start_job(self, context, "connection", "Test connection", _connection_work)


CLASSES = (ArtForgePreferences, ARTFORGE_OT_test_connection)
