"""pickle-5 objects: numpy arrays come back as read-only views of the store's memory."""

import pickle

import numpy as np
import pytest

import plasmon
from conftest import ref_count


def test_several_arrays_round_trip_without_a_copy(client):
    obj = {
        "a": np.arange(100_000, dtype=np.float32),
        "b": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "text": "not an array",
        "n": [1, 2, 3],
    }
    oid = client.put_object(obj, metadata=b"kind=batch")
    got = client.get_object(oid)
    assert got["text"] == "not an array" and got["n"] == [1, 2, 3]
    for k in ("a", "b", "fortran"):
        assert got[k].dtype == obj[k].dtype and got[k].shape == obj[k].shape
        assert (got[k] == obj[k]).all() and not got[k].flags.writeable, k
        assert got[k].ctypes.data % 64 == 0, k  # aligned in the store
    assert got["fortran"].flags.f_contiguous
    again = client.get_object(oid)
    for k in ("a", "b", "fortran"):
        assert np.shares_memory(got[k], again[k]), k
    with client.get(oid) as raw:
        assert raw.metadata == b"kind=batch"
    assert ref_count(client, oid) == 2  # got and again each hold one
    del got, again
    assert ref_count(client, oid) == 0


def test_an_array_itself(client):
    arr = np.random.default_rng(1).random((300, 200))
    back = client.get_object(client.put_object(arr))
    assert isinstance(back, np.ndarray) and (back == arr).all() and not back.flags.writeable


def test_plain_objects_hold_no_reference(client):
    oid = client.put_object({"x": 1, "y": (None, b"bytes")})
    assert client.get_object(oid) == {"x": 1, "y": (None, b"bytes")}
    assert ref_count(client, oid) == 0
    assert client.get_object(client.put_object(None)) is None


def test_pickle_buffer_and_given_id(client):
    oid = plasmon.ObjectID.random()
    data = bytearray(b"out of band" * 1000)
    assert client.put_object(pickle.PickleBuffer(data), id=oid) == oid
    assert client.put_object(b"given as bytes", id=b"i" * 20) == plasmon.ObjectID(b"i" * 20)
    back = client.get_object(oid)
    assert bytes(memoryview(back)) == bytes(data) and memoryview(back).readonly


def test_errors(client):
    with pytest.raises(plasmon.ObjectNotFound):
        client.get_object(plasmon.ObjectID.random(), timeout_ms=10)
    with pytest.raises(plasmon.InvalidArgument, match="put_object"):
        client.get_object(client.put(b"raw bytes, not a pickle"))
    # A header that claims more than the object holds is refused, not read past the end.
    import struct
    head = struct.pack("<8sIIQQ", b"PLPICKL5", 1, 0, 64, 1 << 40)
    with pytest.raises(plasmon.InvalidArgument, match="runs past"):
        client.get_object(client.put(head))
