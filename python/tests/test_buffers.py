"""Zero copy and the lifetime of a Buffer's reference, as the store counts it."""

import gc

import numpy as np
import pytest

import plasmon
from conftest import ref_count, wait_until


def _address(arr):
    return arr.__array_interface__["data"][0]


def test_two_gets_share_the_stores_memory(client):
    oid = client.put(np.arange(4096, dtype=np.int64))
    a = np.asarray(client.get(oid)).view(np.int64)
    b = np.frombuffer(memoryview(client.get(oid)), np.int64)
    assert np.shares_memory(a, b) and not a.flags.writeable
    assert (a == np.arange(4096)).all()
    assert not np.shares_memory(a, np.frombuffer(bytes(client.get(oid)), np.int64))


def test_a_1gib_array_is_not_copied(client):
    oid = plasmon.ObjectID.random()
    size = 1 << 30
    w = np.frombuffer(client.create(oid, size), np.uint8)
    w[::1 << 20] = 7  # one byte per MiB: the rest stays zero
    del w
    client.seal(oid)
    with client.get(oid) as buf:
        view = memoryview(buf)
        arr = np.frombuffer(view, np.uint8)
        assert arr.nbytes == size and _address(arr) == buf.address  # the store's bytes, in place
        assert np.shares_memory(arr, np.asarray(client.get(oid)))
        assert int(arr[::1 << 20].sum()) == 7 * 1024 and arr[1] == 0
        del arr, view
    client.delete(oid)


def test_buffer_outlives_its_client(store):
    c = store.connect()
    oid = c.put(b"still here")
    buf = c.get(oid)
    arr = np.asarray(c.get(oid))
    del c
    gc.collect()
    assert bytes(buf) == b"still here" and arr.tobytes() == b"still here"
    with store.connect() as other:
        assert ref_count(other, oid) == 2  # both references still held
        del buf, arr
        assert wait_until(lambda: ref_count(other, oid) == 0)


def test_reference_goes_with_the_last_view(client):
    oid = client.put(b"x" * 100)
    buf = client.get(oid)
    view = memoryview(buf)
    arr = np.asarray(buf)
    del buf
    assert ref_count(client, oid) == 1
    del view
    assert ref_count(client, oid) == 1  # arr still uses it
    del arr
    assert ref_count(client, oid) == 0  # the release rides on this client's next request


def test_release_and_with_block(client):
    oid = client.put(b"abc", metadata=b"m")
    buf = client.get(oid)
    buf.release()
    assert buf.released and ref_count(client, oid) == 0
    with pytest.raises(ValueError, match="released"):
        memoryview(buf)
    with pytest.raises(ValueError, match="released"):
        buf.metadata
    with pytest.raises(ValueError):
        np.frombuffer(buf, np.uint8)
    buf.release()  # twice is fine
    with client.get(oid) as b2:
        assert bytes(b2) == b"abc" and ref_count(client, oid) == 1
    assert b2.released and ref_count(client, oid) == 0


def test_release_with_a_live_view_waits_for_it(client):
    oid = client.put(b"view me")
    buf = client.get(oid)
    view = memoryview(buf)
    buf.release()
    assert ref_count(client, oid) == 1 and bytes(view) == b"view me"
    with pytest.raises(ValueError):
        memoryview(buf)  # no new views
    view.release()
    assert ref_count(client, oid) == 0


def test_frombuffer_after_release_does_not_crash(client):
    # numpy.frombuffer keeps no export: after release() the array reads memory
    # that is still mapped (its content is no longer guaranteed).
    oid = client.put(np.ones(1000))
    buf = client.get(oid)
    arr = np.frombuffer(buf, np.float64)
    buf.release()
    client.close()
    assert arr.shape == (1000,)
    float(arr.sum())


def test_eviction_waits_for_the_last_view(make_store):
    s = make_store("-m", "64M")
    with s.connect() as c:
        oid = c.put(np.zeros(32 << 20, np.uint8))
        arr = np.asarray(c.get(oid))
        assert c.evict(64 << 20) == 0 and c.contains(oid)
        assert arr[-1] == 0
        del arr
        assert c.evict(64 << 20) >= 32 << 20 and not c.contains(oid)


def test_seal_and_abort_refuse_while_views_of_the_new_object_are_out(client):
    # A write through a view kept past the seal would change a sealed
    # object; past an abort, memory the store may give to another object.
    oid = plasmon.ObjectID.random()
    mb = client.create(oid, 8)
    view = memoryview(mb)
    view[:] = b"abcdefgh"
    for call in (client.seal, client.abort):
        with pytest.raises(BufferError, match="view"):
            call(oid)
    assert mb.open and not client.contains(oid), "nothing happened"
    view.release()
    client.seal(oid)
    with client.get(oid) as got:
        assert bytes(got) == b"abcdefgh"


def test_mutable_buffer_views(client):
    oid = plasmon.ObjectID.random()
    mb = client.create(oid, 8)
    memoryview(mb)[:] = b"12345678"
    client.abort(oid)
    with pytest.raises(ValueError, match="aborted"):
        np.frombuffer(mb, np.uint8)
    assert "closed" in repr(mb)
