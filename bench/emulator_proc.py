"""The vLLM emulator in a child process, so its scrape rendering never counts as operator CPU or RSS."""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

PodSpec = tuple[str, str, str, dict[str, Any]]  # (pod, namespace, model, emulator values)


def _serve(conn: Connection) -> None:
    from wva.sim.vllm import EmulatorThread, VLLMEmulator

    class RenderOnce(VLLMEmulator):
        """Values are static during the benchmark: render the exposition once per pod set, not per scrape."""

        _text: str | None = None

        def add_pod(self, pod: str, namespace: str, model: str, **values: Any) -> Any:
            self._text = None
            return super().add_pod(pod, namespace, model, **values)

        def render_all(self) -> str:
            if self._text is None:
                self._text = super().render_all()
            return self._text

    runner = EmulatorThread(RenderOnce())
    emulator = runner.start()
    conn.send(emulator.port)
    while True:
        command, payload = conn.recv()
        if command == "add":
            for pod, namespace, model, values in payload:
                emulator.add_pod(pod, namespace, model, **values)
            conn.send(len(emulator.pods()))
        elif command == "stop":
            runner.stop()
            conn.send("stopped")
            return


class EmulatorProcess:
    """``start()`` returns the port; ``add_pods`` blocks until the child has them all."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), name="wva-bench-emulator", daemon=True)
        self.port = 0

    def start(self, timeout: float = 30.0) -> int:
        self._proc.start()
        if not self._conn.poll(timeout):
            raise TimeoutError("emulator process did not start")
        self.port = int(self._conn.recv())
        return self.port

    def add_pods(self, pods: list[PodSpec], timeout: float = 60.0) -> int:
        self._conn.send(("add", pods))
        if not self._conn.poll(timeout):
            raise TimeoutError("emulator process did not add the pods")
        return int(self._conn.recv())

    def stop(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("stop", None))
                self._conn.poll(10)
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
