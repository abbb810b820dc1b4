"""Threads, subscriptions (select and asyncio) and fork."""

import asyncio
import os
import select
import threading

import numpy as np
import pytest

import plasmon
from conftest import ref_count


def test_threads_share_a_client(client):
    errors = []

    def work(seed):
        try:
            rng = np.random.default_rng(seed)
            for _ in range(50):
                arr = rng.integers(0, 1000, size=int(rng.integers(1, 50_000)))
                oid = client.put_object(arr)
                assert (client.get_object(oid) == arr).all()
                client.delete(oid)
        except Exception as e:  # reported below, with the thread's seed
            errors.append((seed, e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_waiting_get_releases_the_gil(client):
    oid = plasmon.ObjectID.random()
    got = []
    t = threading.Thread(target=lambda: got.append(client.get(oid, timeout_ms=20_000)))
    t.start()
    # This thread runs Python while the other waits in get: the seal wakes it.
    client.put(b"sealed while another thread waits", id=oid)
    t.join(30)
    assert not t.is_alive() and bytes(got[0]) == b"sealed while another thread waits"


def test_subscribe_with_select(client):
    with client.subscribe() as sub:
        assert sub.next(0) is None
        oid = client.put(b"12345", metadata=b"xy")
        r, _, _ = select.select([sub], [], [], 10)
        assert r == [sub]
        n = sub.next(0)
        assert (n.kind, n.id, n.data_size, n.metadata_size) == ("sealed", oid, 5, 2)
        client.delete(oid)
        assert [(m.kind, m.id) for m in [next(iter(sub))]] == [("deleted", oid)]
    with pytest.raises(plasmon.Disconnected):
        sub.next(0)


def test_subscribe_with_asyncio(client):
    async def main():
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()
        sub = client.subscribe()

        def readable():  # several notifications may come in one read: drain them
            while (n := sub.next(0)) is not None:
                queue.put_nowait(n)

        loop.add_reader(sub.fileno(), readable)
        ids = [client.put(bytes([i])) for i in range(3)]
        seen = [await asyncio.wait_for(queue.get(), 10) for _ in ids]
        loop.remove_reader(sub.fileno())
        sub.close()
        return ids, seen

    ids, seen = asyncio.run(main())
    assert [n.id for n in seen] == ids and {n.kind for n in seen} == {"sealed"}


def test_fork_child_connects_again(store, client):
    oid = client.put(b"from the parent")
    held = client.get(oid)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report by exit code, never return into pytest
        code = 1
        try:
            try:
                client.stats()
                code = 2  # the inherited client must refuse
            except plasmon.Disconnected:
                with plasmon.connect(store.socket) as mine:
                    code = 0 if bytes(mine.get(oid)) == b"from the parent" else 3
            try:
                memoryview(held)
                code = code or 4
            except ValueError:
                pass
            del held  # destroys nothing of the parent's connection
            os.write(w, b"x")
        finally:
            os._exit(code)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # The parent's connection and reference are intact.
    assert ref_count(client, oid) == 1 and bytes(held) == b"from the parent"
    held.release()
    assert ref_count(client, oid) == 0


def test_closing_a_subscription_wakes_its_reader(client):
    sub = client.subscribe()
    woke = []

    def read():
        try:
            next(sub)
        except plasmon.Disconnected as e:
            woke.append(e)

    t = threading.Thread(target=read)
    t.start()
    t.join(0.2)  # let it block in next()
    sub.close()
    t.join(10)
    assert not t.is_alive() and len(woke) == 1
    with pytest.raises(plasmon.Disconnected, match="closed"):
        sub.fileno()


def test_ctrl_c_interrupts_waits_that_have_no_end(client):
    import signal
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    missing = plasmon.ObjectID.random()
    held = client.put(b"found at once")
    with client.subscribe() as sub:
        for wait in (lambda: client.get([held, missing]), lambda: sub.next(-1), lambda: next(sub)):
            timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            try:
                with pytest.raises(KeyboardInterrupt):
                    wait()
            finally:
                timer.cancel()
    assert ref_count(client, held) == 0  # what the interrupted get had found is released
    assert client.get(held, timeout_ms=0) is not None  # and the client goes on
