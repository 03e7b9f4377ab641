"""The server's TCP handshake, started while the console script is still loading its modules (issue 20).

Why: a small command's fixed cost is its start-up (mostly imports, ~0.2 s)
plus two round trips (the TCP handshake, then the request). Through a
150 ms path that is too close to the goal of 0.3 s + 2 round trips. The
handshake needs nothing the imports bring, so the console script starts it
first (:func:`start`, a non-blocking ``connect``) and the
client's first connection to that address takes the socket over
(:func:`socket_factory`, aiohttp's ``TCPConnector(socket_factory=...)``):
the handshake's round trip overlaps the start-up.

It is an optimisation, never a change of behaviour:

- an IP-literal host is connected at once; a name is resolved in a daemon
  thread only once aiohttp is imported (:func:`resolve_names`: a lookup
  racing the environment that
  :func:`._tls.import_aiohttp_without_default_trust` changes for the length
  of that import is undefined behaviour in the C library), so a name's
  handshake overlaps less of the start-up; aiohttp's own lookup is not
  waited for nor replaced;
- aiohttp still resolves, connects (happy eyeballs), times out, wraps TLS
  with the engine's verified context and reports errors as before: the early
  socket is handed over only for the address aiohttp tries, only once, and
  only while it is connecting or connected with nothing to read. A
  handshake that failed already (a server that is down) is closed and
  aiohttp connects a fresh socket, so the user sees today's error;
- a socket nobody took is closed at exit (:func:`discard`).
"""

from __future__ import annotations

import atexit
import contextvars
import errno
import ipaddress
import os
import select
import socket
import threading
from typing import Any

__all__ = ["discard", "handshake_was_early", "pending", "resolve_names", "socket_factory", "start"]

#: What a non-blocking connect on a socket whose handshake is under way answers.
_UNDER_WAY = (errno.EINPROGRESS, errno.EALREADY)


class EarlySocket(socket.socket):
    """A socket whose handshake began early: its first ``connect`` to that address carries on with it."""

    target: tuple[Any, ...] = ()

    def connect(self, address: Any) -> None:  # noqa: D102 - socket.socket's, see the class
        if not self.target or tuple(address) != self.target:
            super().connect(address)
            return
        self.target = ()
        # The kernel knows where the handshake is: completed (Linux answers 0 once, then EISCONN;
        # BSDs EISCONN at once), or EALREADY while under way: the event loop then waits for it
        # as for any connect, and reads its outcome (SO_ERROR) as for any connect.
        code = self.connect_ex(address)
        if code in (0, errno.EISCONN):
            return
        if code in _UNDER_WAY:
            raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))
        raise OSError(code, os.strerror(code))


#: The one early socket of this process, until a connection takes it or it is discarded.
_early: EarlySocket | None = None
#: A named server's host and port, resolved once the environment is steady (:func:`resolve_names`).
_named: tuple[str, int] | None = None
#: The client's first connection was made: an early socket that comes later is closed.
_served = False
#: :func:`start` began a handshake (or a name's lookup) that no connection has taken yet.
_started = False
#: Between a resolving thread publishing its socket and a connection taking it.
_lock = threading.Lock()
#: Set in the task whose connection took the early socket with its handshake over
#: (:func:`handshake_was_early`): the task of the request that connection was made for.
_taken_connected: contextvars.ContextVar[bool] = contextvars.ContextVar("flowxfer_early_taken", default=False)


def start(host: str, port: int) -> bool:
    """Start the TCP handshake with ``host``, ``port``; False when it was not started.

    For a process flowxfer owns (the console script), once, before the
    imports. An IP literal is connected at once; a name waits for
    :func:`resolve_names`.
    """
    global _named, _started, _served
    if _early is not None or _named is not None:
        return False
    _served = False
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        _named = (host, port)
    else:
        try:
            infos = socket.getaddrinfo(
                host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_NUMERICHOST
            )
        except OSError:
            return False
        if not _connect(infos[0]):
            return False
    _started = True
    atexit.register(discard)
    return True


def resolve_names() -> threading.Thread | None:
    """Resolve and connect a named server in a daemon thread, once nothing changes the environment any more.

    Not before: :func:`._tls.import_aiohttp_without_default_trust` sets
    variables while aiohttp loads, and the C library's resolver reads the
    environment (a ``setenv`` racing a ``getenv`` is undefined). The lookup
    is the one aiohttp makes (``AI_ADDRCONFIG``, the first address first).
    """
    global _named
    named, _named = _named, None
    if named is None:
        return None
    resolver = threading.Thread(target=_resolve, args=named, name="flowxfer-preconnect", daemon=True)
    resolver.start()
    return resolver


def _resolve(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
    except (OSError, UnicodeError):
        return  # aiohttp's own lookup meets (and reports) the same failure
    if infos:
        _connect(infos[0])


def _connect(info: tuple[Any, ...]) -> bool:
    """Start a non-blocking connect to ``info``'s address and keep the socket unless a connection came first."""
    global _early
    family, type_, proto, _, address = info
    try:
        sock = EarlySocket(family, type_, proto)
    except OSError:
        return False
    sock.target = tuple(address)
    sock.setblocking(False)
    if sock.connect_ex(sock.target) not in (0, *_UNDER_WAY):
        sock.close()  # failed at once: aiohttp meets (and reports) the same failure itself
        return False
    with _lock:
        if _served or _early is not None:
            sock.close()
            return False
        _early = sock
    return True


def pending() -> bool:
    """Whether an early socket is there or coming (the client then passes :func:`socket_factory`)."""
    return _started and not _served


def socket_factory(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's socket for ``addr_info``: the early one when it is for that address and usable, else a new one.

    Never waits: an early socket still being resolved is too late, and closed when it comes.
    """
    global _early, _served
    family, type_, proto, _, address = addr_info
    with _lock:
        early, _early, _served = _early, None, True
    if early is not None:
        if early.family == family and tuple(address) == early.target and _usable(early):
            if _connected(early):
                _taken_connected.set(True)
            return early
        early.close()
    return socket.socket(family, type_, proto)


def handshake_was_early() -> bool:
    """Whether the connection this task just made took the early socket with its TCP handshake over (once).

    For the client's trace of a new connection, in the task of the request
    it was made for (:func:`socket_factory` ran in it): that request waited
    for no TCP handshake, so its answer took one round trip, not two.
    """
    if not _taken_connected.get():
        return False
    _taken_connected.set(False)
    return True


def _connected(sock: EarlySocket) -> bool:
    """The handshake is over: writable, nothing to read, no error."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLOUT | select.POLLERR | select.POLLHUP)
    events = poller.poll(0)
    return bool(events) and events[0][1] == select.POLLOUT


def _usable(sock: EarlySocket) -> bool:
    """Connecting, or connected with nothing to read (no data, no FIN, no error): the first request may go on it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLOUT | select.POLLERR | select.POLLHUP)
    events = poller.poll(0)
    if not events:
        return True  # the handshake is under way
    mask = events[0][1]
    if mask != select.POLLOUT:
        return False
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def discard() -> None:
    """Close the early socket if no connection took it (one still being resolved is closed when it comes)."""
    global _early, _served
    with _lock:
        early, _early, _served = _early, None, True
    if early is not None:
        early.close()
