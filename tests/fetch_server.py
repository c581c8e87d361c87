"""A local HTTP server for `asva fetch` tests: files in the Hugging Face Hub's URL layout
(``/<repo>/resolve/<revision>/<path>``, with the Hub's ``X-Error-Code`` refusals) and at plain URLs
(``/files/<name>``), with ``Range`` requests, and connections it can cut mid-file."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    hub: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    """(repo, revision, path) -> bytes."""
    plain: dict[str, bytes] = field(default_factory=dict)
    """name -> bytes, at /files/<name>."""
    cut_once: dict[str, int] = field(default_factory=dict)
    """URL path -> byte count: the next GET of it sends that many bytes and drops the connection."""
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    """(method, path, Range header) of every request."""
    bytes_sent: int = 0


class FileServer:
    def __init__(self) -> None:
        self.served = Served()
        served = self.served

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _lookup(self) -> tuple[bytes | None, dict[str, str]]:
                path = self.path.split("?")[0]
                if path.startswith("/files/"):
                    body = served.plain.get(path[len("/files/") :])
                    return body, {} if body is not None else {"X-Error-Code": "NotFound"}
                parts = path.lstrip("/").split("/")
                if "resolve" not in parts:
                    return None, {}
                i = parts.index("resolve")
                repo, rev, file = "/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2 :])
                if not any(r == repo for r, _, _ in served.hub):
                    return None, {"X-Error-Code": "RepoNotFound"}
                if not any(r == repo and v == rev for r, v, _ in served.hub):
                    return None, {"X-Error-Code": "RevisionNotFound"}
                body = served.hub.get((repo, rev, file))
                return body, {} if body is not None else {"X-Error-Code": "EntryNotFound"}

            def do_GET(self) -> None:
                rng = self.headers.get("Range", "")
                served.requests.append(("GET", self.path, rng))
                body, err = self._lookup()
                if body is None:
                    self.send_response(404)
                    for k, v in err.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng.startswith("bytes=") else 0
                if start >= len(body) and start:
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                chunk = body[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                cut = served.cut_once.pop(self.path.split("?")[0], None)
                sent = chunk if cut is None else chunk[:cut]
                self.wfile.write(sent)
                self.wfile.flush()
                served.bytes_sent += len(sent)
                if cut is not None:
                    self.close_connection = True
                    self.connection.shutdown(2)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, path_part: str) -> list[tuple[str, str, str]]:
        return [r for r in self.served.requests if r[0] == "GET" and path_part in r[1]]
