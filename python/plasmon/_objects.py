"""Python objects in the store: pickle protocol 5 with out-of-band buffers.

One plasmon object per Python object, laid out as

    header   b"PLPICKL5", u32 version (1), u32 n, u64 pickle offset, u64 pickle size,
             then n times (u64 offset, u64 size), all little-endian
    pickle   the pickle stream (protocol 5), with the large buffers left out
    buffer i each out-of-band buffer (a numpy array's data, ...), at a multiple of 64 bytes

get_object unpickles with the buffers as read-only memoryviews of the store's
memory: a numpy array comes back as a view of the object (no copy), and the
Buffer (the store's reference) lives as long as the array does.
"""

import pickle
import struct

from . import _plasmon

MAGIC = b"PLPICKL5"
VERSION = 1
ALIGN = 64
_HEAD = struct.Struct("<8sIIQQ")
_ENTRY = struct.Struct("<QQ")


def _errors():
    from . import InvalidArgument, ObjectNotFound
    return InvalidArgument, ObjectNotFound


def _aligned(n):
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def put_object(self, obj, id=None, metadata=b""):
    """Pickles `obj` (protocol 5) into a new object and returns its ObjectID.

    Buffers that pickle hands out of band (numpy arrays' data, PickleBuffer)
    are copied once, straight into the store, each at a 64-byte boundary.
    """
    raw = []
    body = pickle.dumps(obj, protocol=5, buffer_callback=raw.append)
    raw = [b.raw() for b in raw]  # contiguous bytes views of each buffer
    head_size = _HEAD.size + _ENTRY.size * len(raw)
    offsets, at = [], _aligned(head_size)
    for part in [body] + raw:
        offsets.append(at)
        at = _aligned(at + len(part))
    header = bytearray(_HEAD.pack(MAGIC, VERSION, len(raw), offsets[0], len(body)))
    for off, part in zip(offsets[1:], raw):
        header += _ENTRY.pack(off, len(part))
    if id is None:
        oid = _plasmon.ObjectID.random()
    else:
        oid = id if isinstance(id, _plasmon.ObjectID) else _plasmon.ObjectID(id)
    got = self._put_parts(oid, [header, body] + raw, metadata, ALIGN)
    assert got[1:] == offsets, (got, offsets)
    return oid


def get_object(self, id, timeout_ms=-1, fetch=False):
    """The Python object put_object stored as `id` (waiting up to timeout_ms).

    numpy arrays (and other out-of-band buffers) are read-only views of the
    store's memory. Raises ObjectNotFound if the object is not there in time,
    InvalidArgument if it was not made by put_object.
    """
    InvalidArgument, ObjectNotFound = _errors()
    buf = self.get(id, timeout_ms, fetch)
    if buf is None:
        raise ObjectNotFound(f"object {id} is not in the store "
                             f"(waited {timeout_ms} ms; -1 is forever)")
    view = memoryview(buf)
    size = len(view)
    try:
        magic, version, n, pickle_at, pickle_size = _HEAD.unpack_from(view)
    except struct.error:
        magic = None
    if magic != MAGIC or version != VERSION:
        raise InvalidArgument(f"object {id} was not stored by put_object "
                              f"(no {MAGIC!r} version {VERSION} header)")
    if _HEAD.size + _ENTRY.size * n > size or pickle_at + pickle_size > size:
        raise InvalidArgument(f"object {id}: its put_object header runs past its {size} bytes")
    buffers = []
    for i in range(n):
        off, length = _ENTRY.unpack_from(view, _HEAD.size + _ENTRY.size * i)
        if off + length > size:
            raise InvalidArgument(f"object {id}: buffer {i} runs past its {size} bytes")
        buffers.append(view[off:off + length])
    return pickle.loads(view[pickle_at:pickle_at + pickle_size], buffers=buffers)
