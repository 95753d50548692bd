"""Keep a continuous consumer process running, as the stream's sensor keeps a consumer run going:
a process that dies is replaced (after ``backoff`` seconds); the last one ends once the target
number of messages is durable. The real sensor's replacement of a dead run is tested with a real
daemon in tests/integration/test_streaming_continuous.py; here the servers are what fail.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from platform_assets.streaming.config import StreamCatalogue
from tests.faults.streams import Worker


class Supervisor:
    def __init__(self, streams: StreamCatalogue, folder: Path, backoff: float = 1.0, extra=(),
                 mode: str = "continuous"):
        self.streams, self.folder, self.backoff, self.extra = streams, folder, backoff, list(extra)
        self.mode = mode
        self.until = folder / "until"
        self.restarts: list[float] = []  # monotonic times of replacements
        self.exits: list[int] = []
        self.workers: list[Worker] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Supervisor:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def finish_at(self, messages: int) -> None:
        """The consumer stops once ``messages`` are durable."""
        tmp = self.until.with_suffix(".tmp")
        tmp.write_text(str(messages))
        tmp.replace(self.until)

    def _loop(self) -> None:
        first = True
        while not self._stop.is_set():
            args = ["--until-file", str(self.until), *(self.extra if first else [])]
            worker = Worker(self.streams, self.folder, self.mode, args).start()
            self.workers.append(worker)
            first = False
            while worker.proc.poll() is None and not self._stop.is_set():
                time.sleep(0.2)
            if self._stop.is_set():
                worker.stop()
                return
            self.exits.append(worker.proc.returncode)
            if worker.proc.returncode == 0:
                return
            time.sleep(self.backoff)
            self.restarts.append(time.monotonic())

    def running(self) -> bool:
        return self._thread.is_alive()

    def kill_current(self) -> int | None:
        """SIGKILL the consumer process running now (its pid), as a crash would."""
        worker = self.workers[-1] if self.workers else None
        if worker is None or worker.proc.poll() is not None:
            return None
        worker.proc.kill()
        return worker.proc.pid

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop()
            raise AssertionError(f"consumer not done within {timeout:.0f} s:\n{self.logs()}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for w in self.workers:
            w.stop()

    def logs(self) -> str:
        return "\n".join(f"--- worker {i} (exit {w.proc.poll()})\n{w.tail()[-1500:]}" for i, w in enumerate(self.workers))
