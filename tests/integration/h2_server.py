"""A static JSON server over TLS that offers HTTP/2 (ALPN h2, then http/1.1), for the
tests that show smarthomefs speaking HTTP/2 to a server that offers it. The emulated
cloud (tests/cloud/cloud.py) speaks HTTP/1.1 only.

    h2_server.py DOCROOT CERT KEY FD ACCESS_LOG

serves on the listening socket FD (bound by the caller, so it knows the port before the
server starts). GET /a/b answers DOCROOT/a/b.json as application/json, anything else
404: an API resource and its children (/v1/homes, /v1/homes/<id>/devices) can both be
files, which a plain docroot cannot hold (nghttpd answers a directory with a 301).
ACCESS_LOG gets one line a request, ending in "METHOD PATH HTTP-VERSION STATUS", e.g.
"[time] [pid] [INFO] GET /v1/homes 2 200". Headers are never logged: a request carries
a token."""

import asyncio
import sys
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config


def make_app(docroot: Path):
    docroot = docroot.resolve()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        file = (docroot / (scope["path"].lstrip("/") + ".json")).resolve()
        found = (scope["method"] == "GET" and file.is_relative_to(docroot)
                 and file.is_file())
        body = file.read_bytes() if found else b'{"title":"Not Found"}'
        await send({"type": "http.response.start", "status": 200 if found else 404,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def main():
    docroot, cert, key, fd, access_log = sys.argv[1:6]
    config = Config()
    config.bind = [f"fd://{int(fd)}"]
    config.certfile = cert
    config.keyfile = key
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = access_log
    config.access_log_format = "%(m)s %(U)s %(H)s %(s)s"
    config.errorlog = "-"
    asyncio.run(serve(make_app(Path(docroot)), config))


if __name__ == "__main__":
    main()
