"""The server's parts, wired from a Config: the model registry and the engines over it."""

from __future__ import annotations

import logging

from artforge.config import Config
from artforge.engines.base import ImageOutput
from artforge.engines.control_images import ControlImages
from artforge.engines.image import ImageEngine
from artforge.engines.preprocess import PreprocessEngine
from artforge.engines.stylize import StylizeEngine
from artforge.engines.text import TextEngine
from artforge.jobs.scheduler import ImageFilter
from artforge.models.registry import ModelRegistry, ModelSpec
from artforge.runtimes.devices import resolve_devices

log = logging.getLogger(__name__)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.devices = resolve_devices(config.devices)
        defaults = {"text": config.default_text_model, "image": config.default_image_model, "depth": config.depth_model}
        self.registry = ModelRegistry(config.models_dir, config.models, defaults, config.default_backend)
        self.text = TextEngine(self.registry, config.limits, config.tasks, config.max_loaded_models, config.text)
        control_images = ControlImages(self.registry)
        self.image = ImageEngine(
            self.registry, config.limits, config.max_loaded_models, config.max_loaded_loras, config.safety, control_images
        )
        self.stylize = StylizeEngine(config.models_dir, config.limits, config.max_loaded_models)
        self.preprocess = PreprocessEngine(control_images)
        self.engines = (self.text, self.image, self.stylize, self.preprocess)

    def safety_filter(self) -> ImageFilter | None:
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
