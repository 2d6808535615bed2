"""一网通办's failures in the connector's error tree.

The envelope codes every platform shares are translated as ``adapters.envelope``
says; this platform adds::

    4004 办件不存在  → PlatformRejected
    4090 序号不连续  → PushOutOfOrder (a Conflict) with ``last_seq``, the case's last
                       accepted XH (``data.ZHXH``): the case misses the stages
                       between it and this push, which must go first

Every error carries ``platform`` and ``platform_code`` in its context.
"""

from __future__ import annotations

from adapters.envelope import EnvelopePlatform, conflict_as, rejected
from adapters.ywtb import mapping

PLATFORM = "ywtb"

ENVELOPE = EnvelopePlatform(
    PLATFORM,
    {mapping.UNKNOWN_CASE: rejected, mapping.OUT_OF_ORDER: conflict_as("out_of_order")},
)
