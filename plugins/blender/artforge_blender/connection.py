"""Which server to talk to, and whether Blender lets us: plain Python, no bpy.

Blender 4.2+ asks extensions to stay offline unless the user allowed online access
(`bpy.app.online_access`, Preferences > System > Network). A server on this computer is not
"online", so loopback addresses are always allowed; anything else needs the permission.
"""

from __future__ import annotations

import ipaddress

LOCAL_NAMES = ("localhost",)


def host_of(address: str) -> str:
    """The host part of 'host:port', '[::1]:50051', 'dns:///host:port' or a bare host."""
    address = address.strip()
    if "://" in address:
        address = address.split("://", 1)[1].lstrip("/")
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") > 1:  # a bare IPv6 address without a port
        return address
    return address.rsplit(":", 1)[0] if ":" in address else address


def is_local(address: str) -> bool:
    host = host_of(address).lower()
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_problem(address: str, online_access: bool) -> str | None:
    """Why a job must not start for `address`, as a sentence; None when it may."""
    if not host_of(address) or not address.strip():
        return "Set the ArtForge server address (host:port) in the add-on preferences."
    if online_access or is_local(address):
        return None
    return (
        f"Blender's online access is off, so the add-on may only reach a server on this computer, not {address}. "
        "Allow it in Preferences > System > Network, or run the server locally."
    )
