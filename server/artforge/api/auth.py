"""Bearer-token auth: `authorization: Bearer <token>` metadata on every call but health checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import grpc

from artforge.service import Service
from artforge.users import LOCAL, User

HEALTH_PREFIX = "/grpc.health.v1.Health/"


class TokenAuth:
    """Maps a call's token to its user. The users come from the service, which replaces them
    on reload; with none configured, auth is off and every caller is the local user."""

    def __init__(self, service: Service) -> None:
        self.service = service

    @property
    def enabled(self) -> bool:
        return self.service.users.enabled

    def caller(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> User | None:
        """The caller, or None when the token is missing or wrong."""
        users = self.service.users
        if not users.enabled:
            return LOCAL
        header = next((str(v) for k, v in metadata or () if k == "authorization"), "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        return users.by_token(presented)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, auth: TokenAuth) -> None:
        self.auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX) or self.auth.caller(details.invocation_metadata) is not None:
            return handler
        has_header = any(k == "authorization" for k, _ in details.invocation_metadata or ())
        message = (
            "the token is not valid for this server" if has_header else "this server needs a token: send 'authorization: Bearer <token>'"
        )

        async def deny_unary(request: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(request: object, context: grpc.aio.ServicerContext):  # noqa: ANN202
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # makes this an async generator, as a streaming handler must be

        serializer = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(deny_stream, **serializer)
        return grpc.unary_unary_rpc_method_handler(deny_unary, **serializer)
