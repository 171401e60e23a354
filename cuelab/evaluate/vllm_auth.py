"""ASGI middleware for the vLLM server cuelab starts: every HTTP and WebSocket request must carry
`Authorization: Bearer <$VLLM_API_KEY>`. vLLM's own `--api-key` check guards only /v1, /v2, /inference and
/cohere; /invocations runs chat completions (local media, per-request media kwargs) without it.

Loaded inside the vLLM server process (`--middleware cuelab.evaluate.vllm_auth.RequireKey`): stdlib only.
"""

from __future__ import annotations

import hashlib
import hmac
import os

KEY_ENV = "VLLM_API_KEY"
_UNAUTHORIZED = b'{"error": "Unauthorized"}'


class RequireKey:
    def __init__(self, app):
        key = os.environ.get(KEY_ENV)
        if not key:  # fail closed: a guard without a key would let every request through
            raise RuntimeError(f"cuelab's vLLM guard needs ${KEY_ENV}")
        self.app = app
        self.digest = hashlib.sha256(key.encode()).digest()

    def _allowed(self, scope) -> bool:
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(hashlib.sha256(token).digest(), self.digest)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # closing before accept: the handshake is refused (HTTP 403)
            return await send({"type": "websocket.close", "code": 1008})
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(_UNAUTHORIZED)).encode())]})
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})
