"""PostHog's capture wire protocol: batch payloads (encoding) and getting them there (transport).

apiusage speaks the protocol itself instead of calling ``posthog.capture()`` per event:
events are encoded once per batch with orjson, gzipped, and posted over one keep-alive
connection. What arrives is what ``capture()`` would have sent (see ``docs/schema.md``).
"""

from apiusage.wire.encoding import BatchEncoder, EncodedEvent, process_properties
from apiusage.wire.transport import BatchSender, HttpTransport, SendOutcome

__all__ = [
    "BatchEncoder",
    "BatchSender",
    "EncodedEvent",
    "HttpTransport",
    "SendOutcome",
    "process_properties",
]
