"""The artforge.v1.ArtForge service: checks callers, hands requests to the service, streams events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from artforge.api import convert
from artforge.api.auth import TokenAuth
from artforge.errors import ArtForgeError, ErrorCode
from artforge.jobs.events import Finished
from artforge.service import Service
from artforge.users import User
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
    def __init__(self, service: Service, auth: TokenAuth) -> None:
        self.service = service
        self.auth = auth

    def _caller(self, context: grpc.aio.ServicerContext) -> User:
        # The interceptor has already refused unknown tokens; a token dropped by a reload since
        # then is refused here.
        user = self.auth.caller(context.invocation_metadata())
        if user is None:
            raise ArtForgeError(ErrorCode.UNAUTHENTICATED, "the token is not valid for this server")
        return user

    async def GetServerInfo(self, request: server_pb2.GetServerInfoRequest, context: grpc.aio.ServicerContext) -> server_pb2.ServerInfo:
        try:
            info = await self.service.info(self._caller(context))
        except ArtForgeError as error:
            await _abort(context, error)
        return convert.server_info(info, auth_required=self.auth.enabled, style_previews=request.include_style_previews)

    async def ListModels(self, request: server_pb2.ListModelsRequest, context: grpc.aio.ServicerContext) -> server_pb2.ListModelsResponse:
        models = self.service.models(convert.MODEL_KIND_NAMES.get(request.kind))
        return server_pb2.ListModelsResponse(models=[convert.model_info(model) for model in models])

    async def _new_job(
        self, context: grpc.aio.ServicerContext, kind: str, request: Any, options: jobs_pb2.JobOptions, output_format: int = 0
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Submit a request as a job and stream its events."""
        try:
            submit = convert.submit_options(options, output_format)
            caller = self._caller(context)
            job_id = await self.service.submit(kind, request.SerializeToString(), submit, caller, context.time_remaining())
        except ArtForgeError as error:
            await _abort(context, error)
        async for event in self._follow(context, job_id, 0, caller, submitter=True):
            yield event

    # grpc.aio drives a streaming handler by what it is: these must be async generators.
    async def GenerateText(
        self, request: text_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        async for event in self._new_job(context, "text", request, request.options):
            yield event

    async def GenerateImage(
        self, request: image_pb2.GenerateImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        async for event in self._new_job(context, "image", request, request.options, request.output_format):
            yield event

    async def Stylize(self, request: image_pb2.StylizeRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[jobs_pb2.JobEvent]:
        async for event in self._new_job(context, "stylize", request, request.options, request.output_format):
            yield event

    async def Preprocess(self, request: image_pb2.PreprocessRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[jobs_pb2.JobEvent]:
        async for event in self._new_job(context, "preprocess", request, request.options, request.output_format):
            yield event

    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[jobs_pb2.JobEvent]:
        try:
            caller = self._caller(context)
        except ArtForgeError as error:
            await _abort(context, error)
        async for event in self._follow(context, request.job_id, request.from_sequence, caller, submitter=False):
            yield event

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.JobInfo:
        try:
            return convert.job_info(self.service.cancel(request.job_id, self._caller(context)))
        except ArtForgeError as error:
            await _abort(context, error)

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.JobInfo:
        try:
            return convert.job_info(self.service.get(request.job_id, self._caller(context)))
        except ArtForgeError as error:
            await _abort(context, error)

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.ListJobsResponse:
        try:
            caller = self._caller(context)
            jobs, others_queued, others_running = self.service.list_jobs(caller, request.all_users, request.include_finished, request.limit)
        except ArtForgeError as error:
            await _abort(context, error)
        return jobs_pb2.ListJobsResponse(
            jobs=[convert.job_info(job) for job in jobs], others_queued=others_queued, others_running=others_running
        )

    async def GetServerStats(self, request: server_pb2.GetServerStatsRequest, context: grpc.aio.ServicerContext) -> server_pb2.ServerStats:
        try:
            return convert.server_stats(self.service.stats(self._caller(context)))
        except ArtForgeError as error:
            await _abort(context, error)

    async def _follow(
        self, context: grpc.aio.ServicerContext, job_id: str, from_sequence: int, caller: User, submitter: bool
    ) -> AsyncIterator[jobs_pb2.JobEvent]:
        """Stream a job's events; end the call with the job's outcome as its status.

        If the submitter goes away first (gRPC cancels this coroutine), the job is cancelled
        unless it asked to be kept, or ends DEADLINE_EXCEEDED if that is why the call ended.
        """
        finished = None
        try:
            async for sequence, elapsed, event in await self.service.watch(job_id, from_sequence, caller):
                yield convert.job_event(job_id, sequence, elapsed, event)
                finished = event if isinstance(event, Finished) else None
        except ArtForgeError as error:  # no such job, or the server is stopping and the job stays queued
            await _abort(context, error)
        finally:
            if submitter and finished is None:
                self.service.disconnected(job_id)
        if finished is not None and finished.error_code is not None:
            context.set_code(_status(finished.error_code))
            context.set_details(_details(finished.error_message))
