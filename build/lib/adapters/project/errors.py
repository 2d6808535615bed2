"""The platform's failures in the connector's error tree.

The envelope codes every platform shares are translated as ``adapters.envelope``
says; this platform adds::

    4004 项目不存在    → NotFound
"""

from __future__ import annotations

from adapters.envelope import EnvelopePlatform, not_found
from adapters.project import mapping

PLATFORM = "project"

ENVELOPE = EnvelopePlatform(PLATFORM, {mapping.NOT_FOUND: not_found})
