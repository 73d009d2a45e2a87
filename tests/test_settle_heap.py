"""What a started service does to its garbage collector (``repository.serve.settle_heap``), in a
process of its own: start-up's objects are left out of later collections, and young objects are
collected less often than Python's default, the other generations' thresholds kept."""

from __future__ import annotations

import json
import subprocess
import sys

SHOW = """
import gc, json
from repository.serve import YOUNG_COLLECTION, settle_heap
before = gc.get_threshold()
settle_heap()
print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count(), YOUNG_COLLECTION]))
"""


def test_a_started_service_freezes_start_up_and_collects_young_objects_at_its_own_threshold() -> None:
    shown = subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, check=True, timeout=60)
    before, after, frozen, young = json.loads(shown.stdout)
    assert after == [young, *before[1:]] and young > before[0]
    assert frozen > 0
