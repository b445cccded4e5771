"""Receiving the hub's outgoing webhooks: check that a delivery was signed with your secret.

Each delivery is a POST whose body is JSON, signed with the webhook's secret:
`X-Chat-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`. Verify the bytes
as received, before parsing them (re-encoding the JSON would change them).

```python
from chat_client.webhooks import verify

if not verify(SECRET, body, headers.get("X-Chat-Signature")):
    return 401
```
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Chat-Signature"
DELIVERY_HEADER = "X-Chat-Delivery"  # the delivery's id: the same on every retry
TIMESTAMP_HEADER = "X-Chat-Timestamp"  # when this attempt was sent (Unix seconds)
EVENT_HEADER = "X-Chat-Event"  # mention, dm or message
PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The `X-Chat-Signature` value of `body` signed with `secret`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return PREFIX + digest


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `header` (the `X-Chat-Signature` received) signs `body` with `secret`.

    Compared in constant time; a missing or malformed header is False.
    """
    if not header or not header.startswith(PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())
