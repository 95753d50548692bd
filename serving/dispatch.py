"""The runner's batching policy: predict whatever has gathered as soon as the model is free.

BentoML's ``CorkDispatcher`` holds a batch back while the requests queued have waited less than the
average wait it has observed. That average feeds itself: after a burst (or under a sustained load)
requests waited long, so the next ones are held as long, even on an idle server (measured: one
connection, one record, p50 620 ms instead of 20 ms after a 15 s overload; bentoml 1.4.40). For a
model on one thread the best policy is simpler: while a batch runs the next one gathers, and it
starts the moment the model is free, with every record waiting (up to ``max_batch_size``). Requests
that cannot be answered within ``max_latency_ms`` are still refused (503 + Retry-After at the front
end), estimated from BentoML's own fit of the batch duration once it has samples.

``GreedyDispatcher`` keeps everything else of ``CorkDispatcher`` (merging and splitting by
``AutoContainer``, splitting a request across two batches, the optimizer's statistics); only
``controller`` differs. serving/batching.py installs it for the runner's batchable APIs.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bentoml._internal.marshal.dispatcher import CorkDispatcher

logger = logging.getLogger(__name__)
FIT_SAMPLES = 5  # batches measured before the duration estimate is trusted for refusals


class GreedyDispatcher(CorkDispatcher):
    async def controller(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()
        while True:
            try:
                async with self._wake_event:  # until a request is queued
                    await self._wake_event.wait_for(self._queue.__len__)
                await self._idle.wait()  # until the model is free: meanwhile the batch gathers
                self._refuse_late()
                if not self._queue:
                    continue
                self._idle.clear()
                self._sema.acquire()
                self._loop.create_task(self._release_after(tuple(self._get_inputs())))
            except Exception:
                logger.exception("error dispatching a batch")
                self._idle.set()

    async def _release_after(self, jobs) -> None:
        try:
            await self.outbound_call(jobs)
        finally:
            self._idle.set()

    def _refuse_late(self) -> None:
        """Refuse the oldest requests while the oldest could not be answered within the latency bound:
        waited so far plus the estimated duration of a batch of what is queued (BentoML's rule)."""
        trusted = len(self.optimizer.o_stat) >= FIT_SAMPLES
        now = time.time()
        while self._queue:
            waited = now - self._queue[0].enqueue_time
            estimate = self.optimizer.o_a * len(self._queue) + self.optimizer.o_b if trusted else 0.0
            if waited + estimate < self.max_latency or (len(self._queue) == 1 and waited < self.max_latency):
                return
            self._queue.popleft().future.cancel()  # the caller gets the fallback: ServiceUnavailable


def install() -> None:
    """Make BentoML's service app build its batching dispatchers as ``GreedyDispatcher`` (the app
    names the class in its module; it is built after the service module is imported)."""
    from _bentoml_impl.server import app

    app.CorkDispatcher = GreedyDispatcher
