"""Bearer-token auth: `authorization: Bearer <token>` metadata on every call but health checks."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"


class TokenAuth:
    """Maps tokens to caller names; an empty map means auth is off and every caller is ""."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._names_by_token = {token: name for name, token in tokens.items()}

    @property
    def enabled(self) -> bool:
        return bool(self._names_by_token)

    def caller(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """The caller's name, "" when auth is off, None when the token is missing or wrong."""
        if not self.enabled:
            return ""
        header = next((str(v) for k, v in metadata or () if k == "authorization"), "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        for token, name in self._names_by_token.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                return name
        return None


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
