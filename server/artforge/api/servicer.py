"""The artforge.v1.ArtForge service: checks callers, turns requests into jobs, streams events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from artforge import __version__
from artforge.api import convert
from artforge.api.auth import TokenAuth
from artforge.app import App
from artforge.engines.stylize import MAX_BLEND
from artforge.engines.text import MAX_STOP_CHARS, MAX_STOP_STRINGS
from artforge.errors import ArtForgeError, ErrorCode
from artforge.jobs.job import DEFAULT_PRIORITY, Job
from artforge.runtimes.constrained import MAX_SCHEMA_CHARS, MAX_SCHEMA_DEPTH
from artforge.runtimes.devices import describe_device
from artforge.runtimes.torch_diffusion import SCHEDULERS
from artforge_client.v1 import image_pb2, jobs_pb2, server_pb2, service_pb2_grpc, text_pb2

log = logging.getLogger(__name__)

# A status's sentence travels percent-encoded in a trailer (up to 12 bytes a character); past a
# client's metadata limit (8 KB by default, 16 KB at most) the client gets "Stream removed"
# instead of the sentence. Long ones are cut.
MAX_DETAILS_CHARS = 500


def _status(code: ErrorCode) -> grpc.StatusCode:
    return grpc.StatusCode[code.name]


def _details(message: str) -> str:
    return message if len(message) <= MAX_DETAILS_CHARS else f"{message[:MAX_DETAILS_CHARS]}... (cut)"


async def _abort(context: grpc.aio.ServicerContext, error: ArtForgeError) -> None:
    await context.abort(_status(error.code), _details(error.message))


class ArtForgeServicer(service_pb2_grpc.ArtForgeServicer):
    def __init__(self, app: App, auth: TokenAuth) -> None:
        self.app = app
        self.auth = auth

    def _caller(self, context: grpc.aio.ServicerContext) -> str:
        # The interceptor has already refused unknown tokens; this names the known ones.
        return self.auth.caller(context.invocation_metadata()) or ""

    async def GetServerInfo(self, request: server_pb2.GetServerInfoRequest, context: grpc.aio.ServicerContext) -> server_pb2.ServerInfo:
        app, limits = self.app, self.app.config.limits
        # The first call renders the style previews (under a second); later ones find them made.
        styles = await asyncio.to_thread(app.stylize.styles)
        previews = request.include_style_previews
        return server_pb2.ServerInfo(
            server_version=__version__,
            api_version="v1",
            devices=[server_pb2.Device(name=d, description=describe_device(d), busy=d in app.scheduler.running) for d in app.devices],
            limits=server_pb2.Limits(
                max_tokens=limits.max_tokens,
                default_max_tokens=limits.default_max_tokens,
                max_prompt_chars=limits.max_prompt_chars,
                max_image_pixels=limits.max_image_pixels,
                max_steps=limits.max_steps,
                max_batch=limits.max_batch,
                max_queue=limits.max_queue,
                chunk_bytes=limits.chunk_bytes,
                max_request_bytes=limits.max_request_bytes,
                max_priority=DEFAULT_PRIORITY,
                result_ttl_seconds=app.config.result_ttl_seconds,
                min_priority=-limits.max_priority,
                max_history_messages=limits.max_history_messages,
                max_history_chars=limits.max_history_chars,
                max_name_chars=limits.max_name_chars,
                max_label_chars=limits.max_label_chars,
                max_stop_strings=MAX_STOP_STRINGS,
                max_stop_chars=MAX_STOP_CHARS,
                max_json_schema_chars=MAX_SCHEMA_CHARS,
                max_json_schema_depth=MAX_SCHEMA_DEPTH,
                max_loras=limits.max_loras_per_request,
                max_blend_styles=MAX_BLEND,
                max_concurrent_rpcs=limits.max_concurrent_rpcs,
            ),
            tasks=[server_pb2.TextTask(name=t.name, description=t.description) for t in app.text.tasks.values()],
            default_text_model=app.registry.default_name("text"),
            default_image_model=app.registry.default_name("image"),
            schedulers=list(SCHEDULERS),
            styles=[server_pb2.Style(index=s.index, name=s.name, preview_png=s.preview_png if previews else b"") for s in styles],
            images_available=bool(app.registry.list("image")),
            stylize_available=app.stylize.available(),
            queue_length=app.scheduler.queue_length,
            running_jobs=len(app.scheduler.running),
            auth_required=self.auth.enabled,
            loaded_models=self._model_infos(None, only_loaded=True),
        )

    async def ListModels(self, request: server_pb2.ListModelsRequest, context: grpc.aio.ServicerContext) -> server_pb2.ListModelsResponse:
        return server_pb2.ListModelsResponse(models=self._model_infos(convert.MODEL_KIND_NAMES.get(request.kind)))

    def _model_infos(self, kind: str | None, only_loaded: bool = False) -> list[server_pb2.ModelInfo]:
        app = self.app
        loaded = app.loaded_models()
        models = []
        for spec in app.registry.list(kind):
            is_loaded = spec.name in loaded
            if only_loaded and not is_loaded:
                continue
            context_length = app.text.context_length(spec) if is_loaded and spec.kind == "text" else 0
            backend, reason = app.backend_of(spec)
            is_default = spec.name == app.registry.default_name(spec.kind)
            info = convert.model_info(
                spec, loaded=is_loaded, is_default=is_default, context_length=context_length, backend=backend, backend_reason=reason
            )
            models.append(info)
        return models

    async def _new_job(
        self,
        context: grpc.aio.ServicerContext,
        kind: str,
        engine: object,
        prepare: Callable[[], Any],
        options: jobs_pb2.JobOptions,
        output_format: int = 0,
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Check and prepare a request off the event loop, queue it as a job, stream its events."""
        limits = self.app.config.limits
        try:
            fmt = convert.output_format(output_format)
            priority = convert.priority(options, limits)
            # Decoding images, tokenizing (and the first time converting a GGUF) take time.
            prepared = await asyncio.to_thread(prepare)
            job = Job(
                kind,
                engine,
                prepared,
                model=prepared.model,
                label=options.label,
                priority=priority,
                keep_on_disconnect=options.keep_on_disconnect,
                owner=self._caller(context),
                output_format=fmt,
                chunk_bytes=limits.chunk_bytes,
                loop=asyncio.get_running_loop(),
            )
            self.app.scheduler.submit(job, context.time_remaining())
        except ArtForgeError as error:
            await _abort(context, error)
        except Exception as exc:  # a check that failed on this request rather than refusing it
            log.exception("checking a %s request failed", kind)
            problem = f"could not be checked ({type(exc).__name__}: {exc}); the server's log has the details"
            await _abort(context, ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"request: {problem}"))
        async for event in self._follow(job, context, 0, submitter=True):
            yield event

    # grpc.aio drives a streaming handler by what it is: these must be async generators.
    async def GenerateText(
        self, request: text_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        text = self.app.text
        async for event in self._new_job(context, "text", text, lambda: text.prepare(convert.text_request(request)), request.options):
            yield event

    async def GenerateImage(
        self, request: image_pb2.GenerateImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        image, max_pixels = self.app.image, self.app.config.limits.max_image_pixels
        prepare = lambda: image.prepare(convert.image_request(request, max_pixels))  # noqa: E731
        async for event in self._new_job(context, "image", image, prepare, request.options, request.output_format):
            yield event

    async def Stylize(self, request: image_pb2.StylizeRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[jobs_pb2.JobEvent]:
        stylize, max_pixels = self.app.stylize, self.app.config.limits.max_image_pixels
        prepare = lambda: stylize.prepare(convert.stylize_request(request, max_pixels))  # noqa: E731
        async for event in self._new_job(context, "stylize", stylize, prepare, request.options, request.output_format):
            yield event

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[jobs_pb2.JobEvent]:
        try:
            job = self.app.scheduler.get(request.job_id, self._caller(context))
            job.check_replay(request.from_sequence)
        except ArtForgeError as error:
            await _abort(context, error)
        async for event in self._follow(job, context, request.from_sequence, submitter=False):
            yield event

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.JobInfo:
        try:
            return convert.job_info(self.app.scheduler.cancel(request.job_id, self._caller(context)))
        except ArtForgeError as error:
            await _abort(context, error)

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.JobInfo:
        try:
            return convert.job_info(self.app.scheduler.get(request.job_id, self._caller(context)))
        except ArtForgeError as error:
            await _abort(context, error)

    async def _follow(
        self, job: Job, context: grpc.aio.ServicerContext, from_sequence: int, submitter: bool
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Stream a job's events; end the call with the job's outcome as its status.

        If the submitter goes away first (gRPC cancels this coroutine), the job is cancelled
        unless it asked to be kept, or ends DEADLINE_EXCEEDED if that is why the call ended.
        """
        try:
            async for sequence, elapsed, event in job.watch(from_sequence):
                yield convert.job_event(job.id, sequence, elapsed, event)
        finally:
            if submitter and not job.state.finished:
                self.app.scheduler.disconnected(job)
        code, message = job.error()
        if code is not None:
            context.set_code(_status(code))
            context.set_details(_details(message))
