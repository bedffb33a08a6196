"""The gRPC server: the ArtForge service, standard health and reflection, auth and TLS."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from artforge.api import convert
from artforge.api.auth import AuthInterceptor, TokenAuth
from artforge.api.guard import RequestGuard
from artforge.api.servicer import ArtForgeServicer
from artforge.app import App
from artforge.service import Service
from artforge_client.v1 import service_pb2, service_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["ArtForge"].full_name


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Server:
    """A gRPC server in front of the service over an App; `port` is the one actually bound."""

    def __init__(self, app: App) -> None:
        config = app.config
        self.config = config
        self.metrics = None
        if config.metrics_port:
            from artforge.metrics import Metrics  # prometheus-client, only where metrics are on

            self.metrics = Metrics(app.devices, app.text.prefix_caches)
        self.service = Service(app, convert.request_readers(config.limits), observer=self.metrics)
        auth = TokenAuth(self.service)
        limits = config.limits
        # Metrics see every call, refused ones too. The guard runs inside auth: a caller without a
        # valid token learns nothing of its request. Auth is always in place: a reload may turn it on.
        interceptors = [AuthInterceptor(auth), RequestGuard(limits)]
        self.grpc = grpc.aio.server(
            interceptors=[self.metrics.interceptor(), *interceptors] if self.metrics else interceptors,
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", limits.max_request_bytes),
                # Results travel in chunks; this bounds every message the server sends.
                ("grpc.max_send_message_length", limits.chunk_bytes + (1 << 20)),
            ],
        )
        service_pb2_grpc.add_ArtForgeServicer_to_server(ArtForgeServicer(self.service, auth), self.grpc)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self.grpc)
        if config.tls_cert:
            credentials = grpc.ssl_server_credentials([(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
            self.port = self.grpc.add_secure_port(config.address, credentials)
        else:
            self.port = self.grpc.add_insecure_port(config.address)
        if not self.port:
            raise OSError(f"could not listen on {config.address}")
        if not is_loopback(config.host) and not auth.enabled:
            log.warning("listening on %s with no tokens: anyone who can reach this port can use the server", config.host)
        if not is_loopback(config.host) and not config.tls_cert:
            log.warning("listening on %s without TLS: prompts, tokens and images cross the network in the clear", config.host)

    async def start(self) -> None:
        """Resume the job store's jobs, listen (NOT_SERVING), preload models, then report SERVING."""
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.service.start()
        if self.metrics:
            port = self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", self.config.metrics_host, port)
        await self.grpc.start()
        await self.service.preload()
        self.service.ready()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, stop_now: asyncio.Event | None = None) -> None:
        """Refuse new jobs, drain running ones (until `stop_now` is set), then close: watchers of
        queued jobs are told to come back, and the job store keeps those jobs for the next start."""
        self.service.refuse_new_jobs()
        await self.health.enter_graceful_shutdown()
        await self.service.drain(stop_now or asyncio.Event())
        await self.grpc.stop(1.0)
        await self.service.stop()
        if self.metrics:
            self.metrics.stop()
