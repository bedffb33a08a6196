"""The server's parts, wired from a Config: registry -> engines -> scheduler."""

from __future__ import annotations

import logging

from artforge.config import Config
from artforge.engines.text import TextEngine
from artforge.jobs.scheduler import Scheduler
from artforge.models.registry import ModelRegistry
from artforge.runtimes.devices import resolve_devices

log = logging.getLogger(__name__)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.devices = resolve_devices(config.devices)
        self.registry = ModelRegistry(config.models_dir, config.models, {"text": config.default_text_model})
        self.text = TextEngine(self.registry, config.limits, config.tasks, config.max_loaded_models)
        self.scheduler = Scheduler(self.devices, config.limits, config.result_ttl_seconds)

    async def start(self) -> None:
        self.scheduler.start()

    async def preload(self) -> None:
        """Load the configured models on every device, on the threads that will run them."""
        for name in self.config.preload:
            for device in self.devices:
                try:
                    await self.scheduler.run_on_device(device, self.text.preload, name, device)
                    log.info("preloaded %s on %s", name, device)
                except Exception as exc:  # a missing preload model must not stop the server
                    log.warning("could not preload %s on %s: %s", name, device, exc)

    async def stop(self) -> None:
        await self.scheduler.stop()
