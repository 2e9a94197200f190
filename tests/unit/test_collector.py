"""The collector setting every serving process applies once started."""

import gc

from pipeline.collector import GEN0_THRESHOLD, settle_for_serving


def test_settle_freezes_what_lives_and_raises_gen0() -> None:
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        settle_for_serving()
        assert gc.get_threshold() == (GEN0_THRESHOLD, 20, 20)
        assert gc.get_freeze_count() > 0  # this test process's modules are frozen
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
