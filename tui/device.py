"""The device-owner thread: every PC/SC call of one context runs on it.

PC/SC contexts must not be shared across threads, and Textual thread workers
are new threads each time. So the UI never calls pyscard itself: it submits
jobs here and awaits the returned future (`asyncio.wrap_future`), which keeps
the event loop free while the card works.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("keytriage.device")

T = TypeVar("T")


class DeviceOwner:
    """A single worker thread that owns the PC/SC context and runs device jobs in order."""

    def __init__(self, name: str = "keytriage-device") -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._busy = threading.Event()
        self._thread_ident: int | None = None

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """Queue `fn(*args, **kwargs)` on the device thread and return its future."""

        def job() -> T:
            self._thread_ident = threading.get_ident()
            self._busy.set()
            try:
                return fn(*args, **kwargs)
            finally:
                self._busy.clear()

        return self._executor.submit(job)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the device thread and wait for its result (headless commands only)."""
        return self.submit(fn, *args, **kwargs).result()

    @property
    def busy(self) -> bool:
        """True while a job runs."""
        return self._busy.is_set()

    def on_device_thread(self) -> bool:
        """Return True when called from the device thread itself."""
        return threading.get_ident() == self._thread_ident

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting jobs; with `wait`, let the running and queued ones finish first."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
