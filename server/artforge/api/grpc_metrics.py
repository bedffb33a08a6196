"""The standard gRPC server series, named and labelled as go-grpc-prometheus names them:

    grpc_server_started_total{grpc_type,grpc_service,grpc_method}
    grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
    grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}     histogram

grpc_type is "unary", "server_stream", "client_stream" or "bidi_stream"; grpc_code is the status
code's name ("OK", "RESOURCE_EXHAUSTED"). The code is the one the call ends with: one set with
context.set_code, one raised by context.abort, UNKNOWN for an exception, and CANCELLED or
DEADLINE_EXCEEDED for a call the client left. A streaming call counts its whole stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

# Unary calls answer in milliseconds; a job's stream lasts as long as its job, minutes at most.
HANDLING_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

# RpcMethodHandler attribute -> grpc_type, and how to build a handler of that kind.
HANDLER_KINDS = (
    ("unary_unary", "unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", "server_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", "client_stream", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", "bidi_stream", grpc.stream_stream_rpc_method_handler),
)


def status_of_error(error: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status a call ends with when its handler raised `error`."""
    if isinstance(error, grpc.aio.AbortError):  # context.abort set the code before raising
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):  # the client went away, or its deadline passed
        remaining = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every async handler, whatever it is, in one that counts and times it.

    Handlers are wrapped per call, not cached per method: an inner interceptor (auth) may hand
    back a different handler for the same method."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started", "Total number of RPCs started on the server.", labels, registry=registry)
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            labels,
            buckets=HANDLING_SECONDS_BUCKETS,
            registry=registry,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")  # "/artforge.v1.ArtForge/GenerateText"
        for attribute, grpc_type, make_handler in HANDLER_KINDS:
            behavior = getattr(handler, attribute)
            if behavior is not None:
                measured = self._measured(behavior, (grpc_type, service, method))
                return make_handler(measured, handler.request_deserializer, handler.response_serializer)
        return handler

    def _measured(self, behavior: Callable[..., Any], labels: tuple[str, str, str]) -> Callable[..., Any]:
        """`behavior`, of the same kind (async generator or coroutine), counted and timed."""
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                began = self._begin(labels)
                try:
                    async with contextlib.aclosing(behavior(request, context)) as responses:
                        async for response in responses:
                            yield response
                except BaseException as error:
                    self._end(labels, began, status_of_error(error, context))
                    raise
                self._end(labels, began, context.code() or grpc.StatusCode.OK)

            return stream

        if not inspect.iscoroutinefunction(behavior):  # a sync handler grpc runs on a thread: left as it is
            return behavior

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            began = self._begin(labels)
            try:
                response = await behavior(request, context)
            except BaseException as error:
                self._end(labels, began, status_of_error(error, context))
                raise
            self._end(labels, began, context.code() or grpc.StatusCode.OK)
            return response

        return call

    def _begin(self, labels: tuple[str, str, str]) -> float:
        self.started.labels(*labels).inc()
        return time.perf_counter()

    def _end(self, labels: tuple[str, str, str], began: float, code: grpc.StatusCode) -> None:
        self.handled.labels(*labels, code.name).inc()
        self.handling_seconds.labels(*labels).observe(time.perf_counter() - began)
