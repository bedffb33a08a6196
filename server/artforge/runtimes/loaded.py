"""A bounded set of loaded models on each device, least recently used evicted first.

A model is evicted before the one that replaces it loads, and collected at once (models hold
reference cycles, which plain reference counting would leave to a later collection), so a
device never holds more than `max_per_device` models, not even while one is loading.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class LoadedModels(Generic[T]):
    def __init__(self, max_per_device: int, on_unload: Callable[[str, str], None] | None = None) -> None:
        """`on_unload(device, name)` is called after a model was evicted and collected."""
        self.max_per_device = max(1, max_per_device)
        self.on_unload = on_unload
        self._devices: dict[str, OrderedDict[str, T]] = {}
        self._lock = threading.Lock()

    def get(self, device: str, name: str, load: Callable[[], T], on_load: Callable[[], None] | None = None) -> T:
        """The model `name` loaded on `device`, loading it (after evicting the oldest) when missing.

        Loading happens outside the lock: each device has one worker thread, so a model is
        never loaded twice on one device at once, and other devices are not held up.
        """
        with self._lock:
            loaded = self._devices.setdefault(device, OrderedDict())
            if name in loaded:
                loaded.move_to_end(name)
                return loaded[name]
            evicted = []
            while len(loaded) >= self.max_per_device:
                evicted.append(loaded.popitem(last=False)[0])
        if evicted:
            gc.collect()
            for old in evicted:
                log.info("unloaded %s from %s to make room for %s (at most %d models)", old, device, name, self.max_per_device)
                if self.on_unload is not None:
                    self.on_unload(device, old)
        if on_load is not None:
            on_load()
        item = load()
        with self._lock:
            loaded[name] = item
        return item

    def on(self, device: str, name: str) -> T | None:
        """`name` if it is loaded on `device`, without loading it or touching the LRU order."""
        with self._lock:
            return self._devices.get(device, {}).get(name)

    def find(self, name: str) -> T | None:
        """`name` as loaded on any device (the first found), without touching the LRU order."""
        with self._lock:
            return next((loaded[name] for loaded in self._devices.values() if name in loaded), None)

    def values(self) -> list[T]:
        """Every loaded model, on every device."""
        with self._lock:
            return [item for loaded in self._devices.values() for item in loaded.values()]

    def items(self) -> list[tuple[str, str, T]]:
        """(device, name, model) of every loaded model."""
        with self._lock:
            return [(device, name, item) for device, loaded in self._devices.items() for name, item in loaded.items()]

    def loaded_names(self) -> set[str]:
        with self._lock:
            return {name for loaded in self._devices.values() for name in loaded}
