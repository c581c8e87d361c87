"""A TCP forwarder in front of a server, whose outages a test switches on and off.

moto keeps its buckets in memory, so restarting its process would also erase the data; a durable S3 service
(AWS, MinIO, Ceph) comes back with its objects. Clients reach the server through this forwarder instead:
``down()`` stops listening and resets every open connection (clients see resets, then "connection refused",
as when a server process dies), ``up()`` listens on the same port again with the data intact.
"""

from __future__ import annotations

import select
import socket
import struct
import threading

HOST = "127.0.0.1"


class TcpOutage:
    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        listener.settimeout(0.2)  # so the accept loop notices down()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept(): the port stops listening now
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                # linger 0: close sends RST, the way a dying server's kernel tears connections down
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection((HOST, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    client.close()
                    server.close()
                    return
                self._conns |= {client, server}
            threading.Thread(target=self._forward, args=(client, server), daemon=True).start()

    def _forward(self, client: socket.socket, server: socket.socket) -> None:
        """Copy bytes both ways until either side closes (HTTP clients reconnect), then close both."""
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 1.0)
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (server if src is client else client).sendall(data)
        except (OSError, ValueError):  # reset, or closed by down() from another thread
            pass
        finally:
            with self._lock:
                self._conns -= {client, server}
            client.close()
            server.close()
