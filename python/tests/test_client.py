"""Every call of plasmon.Client and every error class, against a real store."""

import os
import signal
import subprocess

import numpy as np
import pytest

import plasmon
from conftest import CLI_BINARY, ref_count


def test_connect_by_argument_environment_and_with(store, monkeypatch):
    with plasmon.connect(store.socket) as c:
        assert c.connected and c.socket == store.socket
    assert not c.connected
    monkeypatch.setenv("PLASMON_SOCKET", store.socket)
    c = plasmon.connect()
    assert c.socket == store.socket and c.stats().capacity > 0
    c.close()
    with pytest.raises(plasmon.Disconnected):
        c.stats()
    monkeypatch.delenv("PLASMON_SOCKET")
    assert plasmon.Client.__doc__ and plasmon.connect.__doc__


def test_connect_to_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(plasmon.Error) as e:
        plasmon.connect(str(tmp_path / "no-store.sock"))
    assert "no-store.sock" in str(e.value)


def test_object_ids():
    raw = bytes(range(20))
    oid = plasmon.ObjectID(raw)
    assert oid.binary() == raw and bytes(oid) == raw
    assert plasmon.ObjectID.from_hex(oid.hex().upper()) == oid
    assert str(oid) == raw.hex() and repr(oid) == f"ObjectID('{raw.hex()}')"
    assert plasmon.ObjectID.random() != plasmon.ObjectID.random()
    assert len({oid, plasmon.ObjectID(raw)}) == 1
    import pickle
    assert pickle.loads(pickle.dumps(oid)) == oid
    with pytest.raises(plasmon.InvalidArgument, match="19"):
        plasmon.ObjectID(raw[:19])
    with pytest.raises(ValueError):  # InvalidArgument is a ValueError too
        plasmon.ObjectID.from_hex("not hex")


def test_content_id_is_the_one_the_cli_gives(store, tmp_path):
    data = os.urandom(100_000)
    f = tmp_path / "f"
    f.write_bytes(data)
    out = subprocess.run([CLI_BINARY, "-s", store.socket, "put", str(f)], check=True,
                         capture_output=True, text=True).stdout.strip()
    assert plasmon.ObjectID.from_content(data).hex() == out
    assert plasmon.ObjectID.from_content(np.frombuffer(data, np.uint8)).hex() == out


def test_create_write_seal_get(client):
    oid = plasmon.ObjectID.random()
    buf = client.create(oid, 1000, metadata=b"fmt=raw")
    assert len(buf) == 1000 and buf.id == oid and buf.open
    np.frombuffer(buf, np.uint8)[:] = np.arange(1000) % 251
    assert not client.contains(oid)
    assert client.get(oid, timeout_ms=0) is None  # not sealed: not visible
    client.seal(oid)
    assert not buf.open
    with pytest.raises(ValueError, match="sealed or aborted"):
        memoryview(buf)
    assert client.contains(oid)
    with client.get(oid) as got:
        assert bytes(got) == (np.arange(1000) % 251).astype(np.uint8).tobytes()
        assert got.metadata == b"fmt=raw" and got.size == 1000 and got.id == oid
        with pytest.raises(TypeError):
            memoryview(got)[0] = 1  # read-only


def test_abort_discards(client):
    oid = plasmon.ObjectID.random()
    client.create(oid, 10)
    client.abort(oid)
    assert not client.contains(oid) and ref_count(client, oid) is None
    client.create(oid, 10)  # the ID is free again
    client.abort(oid)


def test_put_takes_any_contiguous_buffer(client):
    arr = np.arange(1 << 20, dtype=np.float64)  # 8 MiB: past the one-round-trip cap
    for data in (b"bytes", bytearray(b"a bytearray"), memoryview(b"a memoryview"), arr, b""):
        oid = client.put(data, metadata=b"m")
        with client.get(oid) as got:
            assert bytes(got) == bytes(memoryview(data)) and got.metadata == b"m"
    oid = plasmon.ObjectID.random()
    assert client.put(b"x", id=oid) == oid
    with pytest.raises(plasmon.ObjectExists):
        client.put(b"y", id=oid)
    with pytest.raises(TypeError, match="contiguous buffer"):
        client.put("a str is not a buffer")
    with pytest.raises(TypeError, match="contiguous"):
        client.put(arr[::2])


def test_get_many_missing_and_timeout(client):
    a, b = client.put(b"a"), client.put(b"b")
    missing = plasmon.ObjectID.random()
    got = client.get([a, missing, b], timeout_ms=50)
    assert bytes(got[0]) == b"a" and got[1] is None and bytes(got[2]) == b"b"
    assert client.get(missing, timeout_ms=0) is None
    assert client.get(a.binary()) is not None  # 20 bytes work as an ID
    with pytest.raises(TypeError, match="str"):
        client.get(a.hex())


def test_list_records(client):
    oid = client.put(b"12345", metadata=b"abc")
    pending = plasmon.ObjectID.random()
    client.create(pending, 7)
    infos = {i.id: i for i in client.list()}
    assert infos[oid].state == "sealed" and infos[oid].data_size == 5
    assert infos[oid].metadata_size == 3 and infos[oid].ref_count == 0
    assert infos[oid].create_to_seal_us >= 0 and infos[oid].seal_time_us > 0
    assert infos[pending].state == "created" and infos[pending].create_to_seal_us == -1
    assert "sealed" in repr(infos[oid])
    client.abort(pending)


def test_delete_refresh_digest(client):
    a, b = client.put(b"a"), client.put(b"b")
    held = client.get(b)
    missing = plasmon.ObjectID.random()
    res = client.delete([a, b, missing])
    assert res[0] is None
    assert isinstance(res[1], plasmon.ObjectInUse)  # deleted when `held` goes
    assert isinstance(res[2], plasmon.ObjectNotFound) and res[2].message
    assert not client.contains(a) and not client.contains(b)
    held.release()
    c = client.put(b"c")
    assert client.refresh(c) == [None]
    assert isinstance(client.refresh(missing)[0], plasmon.ObjectNotFound)
    digest = client.digest(c)
    assert [i.digest for i in client.list() if i.id == c] == [digest]
    with pytest.raises(plasmon.ObjectNotFound):
        client.digest(missing)


def test_evict_and_stats(make_store):
    s = make_store("-m", "64M")
    with s.connect() as c:
        ids = [c.put(np.zeros(4 << 20, np.uint8)) for _ in range(4)]
        st = c.stats()
        assert st.object_count == 4 and st.sealed_count == 4 and st.used >= 16 << 20
        assert st.capacity >= 64 << 20 and st.clients >= 1
        freed = c.evict(8 << 20)
        assert freed >= 8 << 20
        assert sum(c.contains(i) for i in ids) <= 2
        assert c.stats().evictions >= 2


def test_out_of_memory_and_quota(make_store):
    s = make_store("-m", "64M")
    with s.connect() as c:
        with pytest.raises(plasmon.OutOfMemory):
            c.create(plasmon.ObjectID.random(), 1 << 30)
        c.set_memory_quota(8 << 20)
        with pytest.raises(plasmon.InvalidArgument):
            c.set_memory_quota(8 << 20)  # once per connection
        with pytest.raises(plasmon.OutOfMemory):
            c.create(plasmon.ObjectID.random(), 16 << 20)  # more than the quota


def test_cluster_calls_on_a_single_store(client):
    oid = client.put(b"x")
    with pytest.raises(plasmon.InvalidArgument, match="not part of a cluster"):
        client.where(oid)
    assert client.fetch(oid) == [None]  # local already


def test_seal_and_abort_errors(client):
    oid = client.put(b"sealed")
    with pytest.raises(plasmon.AlreadySealed, match=oid.hex()):
        client.seal(oid)
    with pytest.raises(plasmon.AlreadySealed):
        client.abort(oid)
    with pytest.raises(plasmon.ObjectNotFound):
        client.seal(plasmon.ObjectID.random())
    pending = plasmon.ObjectID.random()
    client.create(pending, 1)
    with pytest.raises(plasmon.ObjectNotSealed):
        client.digest(pending)
    client.abort(pending)


def test_the_benchmark_runs(store):
    import json
    import sys
    out = subprocess.run([sys.executable, "-m", "plasmon.bench", "--socket", store.socket,
                          "--sizes", "64,2M", "--iterations", "20", "--object-mib", "4", "--json"],
                         check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    assert [r["size"] for r in doc["results"]] == [64, 2 << 20]
    for r in doc["results"]:
        for k in ("get_release_python", "get_release_cxx_same_connection", "put_python"):
            assert r[k]["samples"] == 20 and r[k]["p50_us"] > 0, k
    assert [o["array_bytes"] for o in doc["get_object"]] == [1024, 4 << 20]


def test_timeout_from_a_stopped_store(make_store):
    s = make_store()
    with s.connect(request_timeout_ms=200) as c:
        os.kill(s.pid, signal.SIGSTOP)
        try:
            with pytest.raises(plasmon.Timeout) as e:
                c.stats()
            assert isinstance(e.value, TimeoutError)
        finally:
            os.kill(s.pid, signal.SIGCONT)
        assert c.stats().capacity > 0  # the connection stays


def test_store_dies_under_a_client(make_store):
    s = make_store()
    c = s.connect()
    kept = c.get(c.put(b"survives"))
    sub = c.subscribe()
    s.kill()
    with pytest.raises(plasmon.Disconnected) as e:
        c.put(b"after")
    assert isinstance(e.value, ConnectionError) and e.value.message
    with pytest.raises(plasmon.Disconnected):
        c.get(plasmon.ObjectID.random())
    with pytest.raises(plasmon.Disconnected):
        sub.next(5000)
    assert bytes(kept) == b"survives"  # the mapping outlives the store
    c.close()


def test_error_classes():
    names = plasmon._plasmon._status_code_names()
    for code, name in enumerate(names[1:], start=1):
        cls = getattr(plasmon, name)
        assert issubclass(cls, plasmon.Error) and cls.code == name, name
        e = cls("the message")
        assert e.message == "the message" and str(e) == "the message"
    assert issubclass(plasmon.Timeout, TimeoutError)
    assert issubclass(plasmon.Disconnected, ConnectionError)
    assert issubclass(plasmon.InvalidArgument, ValueError)
    assert issubclass(plasmon.PermissionDenied, PermissionError)
    assert issubclass(plasmon.IOError, OSError)


def test_ids_with_a_shared_prefix_hash_apart():
    # Structured IDs: a prefix, then a counter; a dict of them must not degenerate.
    ids = [plasmon.ObjectID(b"job-0001" + i.to_bytes(12, "little")) for i in range(1000)]
    assert len({hash(i) for i in ids}) > 990


def test_get_arguments(client):
    oid = client.put(b"args")
    assert bytes(client.get(ids=oid, timeout_ms=0, fetch=False)) == b"args"
    assert bytes(client.get(oid, 0, False)) == b"args"
    with pytest.raises(TypeError, match="unexpected keyword argument 'timeout'"):
        client.get(oid, timeout=5)
    with pytest.raises(TypeError, match="multiple values for argument 'ids'"):
        client.get(oid, ids=oid)
    with pytest.raises(TypeError, match="missing required argument 'ids'"):
        client.get()
    with pytest.raises(TypeError, match="at most 3"):
        client.get(oid, 0, False, 1)
    with pytest.raises(TypeError):
        client.get(oid, "soon")
    with pytest.raises(OverflowError):
        client.get(oid, 1 << 70)


def test_the_fast_path_and_its_switches(make_store):
    s = make_store("-m", "64M")
    with s.connect() as fast, s.connect(shared_index=False) as slow, \
            s.connect(leased_creates=True) as leased:
        assert fast.shared_index and not slow.shared_index and leased.shared_index
        # A small create placed in the lease: visible to the others at seal.
        oid = plasmon.ObjectID.random()
        objects = slow.stats().object_count
        buf = leased.create(oid, 4096)
        np.frombuffer(buf, np.uint8)[:] = 7
        assert not fast.contains(oid)
        assert slow.stats().object_count == objects  # placed by the client: the store knows nothing yet
        leased.seal(oid)
        assert slow.stats().object_count == objects + 1
        before = slow.stats()
        for _ in range(10):
            with fast.get(oid) as got:
                assert bytes(got) == b"\x07" * 4096
            assert fast.contains(oid)
        with slow.get(oid) as got:  # the socket path sees the same bytes
            assert bytes(got) == b"\x07" * 4096
        after = slow.stats()
        assert after.shm_gets - before.shm_gets == 10
        assert after.shm_contains - before.shm_contains == 10
    # A store without the index serves the same client by the socket.
    n = make_store("-m", "64M", "--no-shared-index")
    with n.connect() as c:
        assert not c.shared_index
        oid = c.put(b"x" * 100)
        with c.get(oid) as got:
            assert bytes(got) == b"x" * 100
        assert c.stats().shm_gets == 0
