"""The server's parts, wired from a Config: registry -> engines -> scheduler."""

from __future__ import annotations

import logging

from artforge.config import Config
from artforge.engines.base import ImageOutput
from artforge.engines.image import ImageEngine
from artforge.engines.stylize import StylizeEngine
from artforge.engines.text import TextEngine
from artforge.jobs.scheduler import ImageFilter, Scheduler
from artforge.models.registry import ModelRegistry, ModelSpec
from artforge.runtimes.devices import resolve_devices

log = logging.getLogger(__name__)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.devices = resolve_devices(config.devices)
        defaults = {"text": config.default_text_model, "image": config.default_image_model}
        self.registry = ModelRegistry(config.models_dir, config.models, defaults, config.default_backend)
        self.text = TextEngine(self.registry, config.limits, config.tasks, config.max_loaded_models)
        self.image = ImageEngine(self.registry, config.limits, config.max_loaded_models, config.max_loaded_loras, config.safety)
        self.stylize = StylizeEngine(config.models_dir, config.limits, config.max_loaded_models)
        self.engines = (self.text, self.image, self.stylize)
        self.scheduler = Scheduler(self.devices, config.limits, config.result_ttl_seconds, self._safety_filter())

    def _safety_filter(self) -> ImageFilter | None:
        """With `safety` on, every image result passes the NSFW detector; flagged ones are blurred."""
        if not self.config.safety:
            return None
        from artforge.engines.safety import SafetyChecker, apply_safety

        checker = SafetyChecker(self.config.models_dir)
        log.info("safety: every image result passes the NSFW detector; flagged ones are blurred")

        def check(images: list[ImageOutput]) -> list[ImageOutput]:
            return apply_safety(checker, images)

        return check

    def backend_of(self, spec: ModelSpec) -> tuple[str, str]:
        """The backend serving `spec` ("" while not loaded) and why; LoRAs have none of their own."""
        engine = {"text": self.text, "image": self.image}.get(spec.kind)
        return engine.backend_of(spec.name) if engine is not None else ("", "")

    def loaded_models(self) -> set[str]:
        return set().union(*(engine.loaded_models() for engine in self.engines))

    async def start(self) -> None:
        self.scheduler.start()

    async def preload(self) -> None:
        """Load the configured models on every device, on the threads that will run them."""
        for name in self.config.preload:
            engine = self.image if any(spec.name == name for spec in self.registry.list("image")) else self.text
            for device in self.devices:
                try:
                    await self.scheduler.run_on_device(device, engine.preload, name, device)
                    log.info("preloaded %s on %s", name, device)
                except Exception as exc:  # a missing preload model must not stop the server
                    log.warning("could not preload %s on %s: %s", name, device, exc)

    async def stop(self) -> None:
        await self.scheduler.stop()
