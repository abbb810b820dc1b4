"""plasmon for Python: a client of a node's plasmon-store.

    import numpy as np, plasmon
    with plasmon.connect() as c:            # $PLASMON_SOCKET, else /tmp/plasmon.sock
        oid = c.put(b"hello")               # copied once into the store
        with c.get(oid) as buf:             # zero-copy, read-only, in the store's memory
            print(bytes(buf))
        oid = c.put_object({"x": np.arange(10)})   # pickle protocol 5, arrays out of band
        obj = c.get_object(oid)             # obj["x"] is a read-only view of the store

Every call goes through the C++ client (libplasmon_client), with the GIL
released while it may block; a Client may be used from several threads.
After fork, a child must connect again: a Client inherited from the parent
raises Disconnected (and never touches the parent's connection).
"""

import os as _os

from . import _plasmon
from ._plasmon import (
    Buffer,
    MutableBuffer,
    Notification,
    ObjectHolder,
    ObjectID,
    ObjectInfo,
    StoreStats,
    Subscription,
)
from . import _objects

# plasmon.IOError is left out of __all__: `from plasmon import *` would hide the builtin.
__all__ = [
    "connect", "Client", "ObjectID", "Buffer", "MutableBuffer", "ObjectInfo", "StoreStats",
    "ObjectHolder", "Notification", "Subscription", "DEFAULT_SOCKET", "Error",
    "ObjectExists", "ObjectNotFound", "ObjectNotSealed", "OutOfMemory", "Timeout",
    "InvalidArgument", "Disconnected", "ProtocolError", "ObjectInUse",
    "AlreadySealed", "PermissionDenied", "Corruption",
]

DEFAULT_SOCKET = "/tmp/plasmon.sock"


# ---- errors: one class per status code of the C++ API (plasmon/status.h) ----

class Error(Exception):
    """A plasmon call failed. `code` names the status code, `message` is the store's text."""

    code = "Error"

    def __init__(self, message=""):
        super().__init__(message)
        self.message = message


class ObjectExists(Error):
    """An object with that ID is already in the store."""
    code = "ObjectExists"


class ObjectNotFound(Error):
    """No object with that ID."""
    code = "ObjectNotFound"


class ObjectNotSealed(Error):
    """The object exists but is still being created."""
    code = "ObjectNotSealed"


class OutOfMemory(Error):
    """No room, even after evicting everything evictable."""
    code = "OutOfMemory"


class Timeout(Error, TimeoutError):
    """The deadline passed first."""
    code = "Timeout"


class InvalidArgument(Error, ValueError):
    """The caller asked for something malformed."""
    code = "InvalidArgument"


class Disconnected(Error, ConnectionError):
    """The store (or a peer) is gone, or this client is closed or was inherited across fork."""
    code = "Disconnected"


class IOError(Error, OSError):  # noqa: A001 (the status code's name)
    """A system call failed."""
    code = "IOError"


class ProtocolError(Error):
    """A peer sent bytes that are not valid protocol."""
    code = "ProtocolError"


class ObjectInUse(Error):
    """The object is referenced; the request was deferred or refused."""
    code = "ObjectInUse"


class AlreadySealed(Error):
    """The object was sealed already."""
    code = "AlreadySealed"


class PermissionDenied(Error, PermissionError):
    """A peer failed authentication (cluster secret)."""
    code = "PermissionDenied"


class Corruption(Error):
    """Bytes arrived but do not match their digest."""
    code = "Corruption"


def _register_errors():
    by_name = {cls.code: cls for cls in (
        ObjectExists, ObjectNotFound, ObjectNotSealed, OutOfMemory, Timeout, InvalidArgument,
        Disconnected, IOError, ProtocolError, ObjectInUse, AlreadySealed, PermissionDenied,
        Corruption)}
    names = _plasmon._status_code_names()
    # Code 0 is OK; anything the C++ side raises without a class of its own is an Error.
    _plasmon._set_error_classes([Error] + [by_name.get(n, Error) for n in names[1:]])


_register_errors()


# ---- the client ----

def _socket_path(socket):
    if socket is not None:
        return _os.fspath(socket)
    return _os.environ.get("PLASMON_SOCKET") or DEFAULT_SOCKET


class Client(_plasmon._Client):
    """A connection to a plasmon-store (see plasmon.connect).

    Objects: create/seal/abort, put, get (zero-copy Buffers), put_object and
    get_object (pickle protocol 5, numpy arrays without a copy), contains,
    list, delete, refresh, digest, evict, stats, where, fetch,
    set_memory_quota, subscribe. Errors raise plasmon.Error subclasses.
    `with Client(...) as c:` closes it at the end; buffers got from it stay
    readable after close.
    """

    def __init__(self, socket=None, request_timeout_ms=10000, shared_index=True,
                 leased_creates=False):
        super().__init__(_socket_path(socket), request_timeout_ms, shared_index,
                         leased_creates)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "connected" if self.connected else "closed"
        return f"<plasmon.Client {self.socket} {state}>"

    put_object = _objects.put_object
    get_object = _objects.get_object


def connect(socket=None, request_timeout_ms=10000, shared_index=True, leased_creates=False):
    """Connects to the store at `socket` (default: $PLASMON_SOCKET, else /tmp/plasmon.sock).

    request_timeout_ms: how long a request may go unanswered before Timeout
    (-1: never); the waits of get and fetch come on top. Raises Disconnected
    (or IOError) if no store listens there, Timeout if it does not answer.
    shared_index: get, release and contains of sealed objects without a round
    trip where the store offers its shared index (Client.shared_index says
    whether it did). leased_creates: small objects (up to 16 KiB) are placed
    in a lease of the store's memory and created and sealed by one round trip
    at seal; the store does not know them before (docs/FAST_PATH.md).
    """
    return Client(socket, request_timeout_ms, shared_index, leased_creates)
