"""Whether the client of a ChatKit stream is still there.

ChatKit's front end stops an answer by dropping the connection, and a WSGI server only learns
of that when a write fails, which can be long: a run waiting on its model writes nothing. So
the stream looks at the socket itself (a peek that neither blocks nor consumes) each time the
run says anything, pings included.
"""

from __future__ import annotations

import socket

from flask import request

# Where the servers the bridge runs on put the request's socket.
_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


class Connection:
    def __init__(self, sock: socket.socket | None):
        self._socket = sock
        self.dropped = False

    @classmethod
    def of_request(cls) -> "Connection":
        environ = request.environ
        return cls(next((environ[key] for key in _SOCKET_KEYS if key in environ), None))

    def gone(self) -> bool:
        """True once the client has closed its end (or a write to it has failed)."""
        if self.dropped or self._socket is None:
            return self.dropped
        try:
            self.dropped = self._socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            pass  # nothing to read: still there
        except ValueError:
            self._socket = None  # a TLS socket cannot be peeked at; rely on failed writes
        except OSError:
            self.dropped = True  # reset by the peer
        return self.dropped
