"""Per-request ids from pooled random bytes: version 7 row ids, and no ids shared with a
forked child."""

import os
import pickle
import uuid

from pipeline.router.ids import new_request_id, new_row_id


def test_row_ids_are_version_7_and_time_ordered() -> None:
    ids = [new_row_id() for _ in range(300)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == 300
    assert [i.int >> 80 for i in ids] == sorted(i.int >> 80 for i in ids)


def test_a_row_id_is_a_uuid_like_any_other() -> None:
    """Built without `UUID.__init__` (ids.py): equal, hashed, printed and pickled as
    the UUID of the same value."""
    row_id = new_row_id()
    same = uuid.UUID(int=row_id.int)
    assert row_id == same and hash(row_id) == hash(same) and str(row_id) == str(same)
    assert row_id.is_safe is same.is_safe and pickle.loads(pickle.dumps(row_id)) == same
    assert {same: 1}[row_id] == 1


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_request_id()  # the parent's pool is filled before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its next ids, to the parent
        os.close(read)
        os.write(write, ",".join(new_request_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_request_id() for _ in range(50)}
    assert len(child) == 50 and not child & parent
