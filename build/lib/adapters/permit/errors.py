"""The platform's failures in the connector's error tree.

The envelope codes every platform shares are translated as ``adapters.envelope``
says; this platform adds::

    4090 请求流水号重复但申请内容不一致  → Conflict (request id reused for other content)
"""

from __future__ import annotations

from adapters.envelope import EnvelopePlatform, conflict
from adapters.permit import mapping

PLATFORM = "permit"

ENVELOPE = EnvelopePlatform(PLATFORM, {mapping.DUPLICATE_REQUEST: conflict})
