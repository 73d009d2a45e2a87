"""A TCP relay in front of a real edge that misbehaves as links do: it ends the first download
after some bytes, or answers the speed probe late. Real sockets, not mocks."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class EdgeRelay:
    """Relays each connection to ``127.0.0.1:target``; records every request line it saw."""

    def __init__(
        self, target: int, *, cut_after: int | None = None, cut_path: str = "", ping_delay: float = 0.0
    ) -> None:
        self.target = target
        self.cut_after = cut_after  # the first download of a path holding ``cut_path`` is cut after this many bytes
        self.cut_path = cut_path
        self.ping_delay = ping_delay
        self.requests: list[str] = []  # the request head of each connection
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop accepting, and wait for it: a thread still in accept() on a closed socket's file
        descriptor would take connections meant for whatever socket reuses that number next."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self._thread.join(10)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            text = head.decode("latin-1")
            self.requests.append(text)
            if "/api/system/ping" in text.split("\r\n", 1)[0]:
                time.sleep(self.ping_delay)
            cut = None
            line = text.split("\r\n", 1)[0]
            if self.cut_after is not None and "/api/system/ping" not in line and self.cut_path in line:
                cut, self.cut_after = self.cut_after, None
            with socket.create_connection(("127.0.0.1", self.target)) as upstream:
                upstream.sendall(head)
                sent = 0
                while data := upstream.recv(65536):
                    if cut is not None and sent + len(data) >= cut:
                        client.sendall(data[: cut - sent])
                        # the link ends mid-body, after exactly ``cut`` bytes (a reset could drop
                        # bytes still in flight and make the cut point a guess)
                        client.shutdown(socket.SHUT_WR)
                        return
                    client.sendall(data)
                    sent += len(data)
