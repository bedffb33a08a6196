"""A bounded set of loaded models on each device, least recently used evicted first."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class LoadedModels(Generic[T]):
    def __init__(self, max_per_device: int) -> None:
        self.max_per_device = max(1, max_per_device)
        self._devices: dict[str, OrderedDict[str, T]] = {}
        self._lock = threading.Lock()

    def get(self, device: str, name: str, load: Callable[[], T], on_load: Callable[[], None] | None = None) -> T:
        """The model `name` loaded on `device`, loading it (and evicting the oldest) when missing.

        Loading happens outside the lock: each device has one worker thread, so a model is
        never loaded twice on one device at once, and other devices are not held up.
        """
        with self._lock:
            loaded = self._devices.setdefault(device, OrderedDict())
            if name in loaded:
                loaded.move_to_end(name)
                return loaded[name]
        if on_load is not None:
            on_load()
        item = load()
        with self._lock:
            loaded[name] = item
            while len(loaded) > self.max_per_device:
                old, _ = loaded.popitem(last=False)
                log.info("unloaded %s from %s to stay within %d models", old, device, self.max_per_device)
        return item

    def find(self, name: str) -> T | None:
        """`name` as loaded on any device (the first found), without touching the LRU order."""
        with self._lock:
            return next((loaded[name] for loaded in self._devices.values() if name in loaded), None)

    def loaded_names(self) -> set[str]:
        with self._lock:
            return {name for loaded in self._devices.values() for name in loaded}
