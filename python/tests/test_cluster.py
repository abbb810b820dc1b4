"""A two-node cluster (Redis and two stores over TCP on 127.0.0.1), driven from Python."""

import numpy as np

import plasmon
from conftest import wait_until


def test_numpy_array_fetched_from_the_other_node(cluster):
    n1, n2 = cluster
    with n1.connect() as c1, n2.connect() as c2:
        arr = np.arange(3 << 20, dtype=np.float32).reshape(3, -1)  # 12 MiB: several chunks
        small = c1.put(b"small object")
        oid = c1.put_object({"arr": arr, "note": "from node-1"})
        assert wait_until(lambda: any(h.node_id == "node-1" and h.alive for h in c2.where(oid)))
        assert not c2.contains(oid)
        assert c2.fetch([oid, small], timeout_ms=30_000) == [None, None]
        assert c2.contains(oid) and bytes(c2.get(small)) == b"small object"
        got = c2.get_object(oid)
        assert got["note"] == "from node-1" and (got["arr"] == arr).all()
        assert c2.stats().fetched == 2

        # get(fetch=True) pulls on the way; a missing object is None after the timeout.
        late = c1.put(np.ones(1000))
        with c2.get(late, timeout_ms=30_000, fetch=True) as b:
            assert (np.frombuffer(memoryview(b)) == 1).all()
        assert c2.get(plasmon.ObjectID.random(), timeout_ms=100, fetch=True) is None
        assert {h.node_id for h in c1.where(late)} >= {"node-1"}
