"""HTTP request counts and latencies by route template (`/jobs/{job_id}`, never the raw path), as ASGI middleware."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HttpMetricsMiddleware:
    """Counts every HTTP request and times it until its body is sent; streams are timed until they end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, noting its status and duration on the app's job service metrics."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            # The router put the matched route into the scope; unmatched paths share one label (no cardinality blow-up).
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            service = getattr(scope["app"].state, "service", None)
            if service is not None:
                method = scope["method"]
                service.metrics.http_requests.labels(method, route, str(status)).inc()
                service.metrics.http_latency.labels(method, route).observe(time.perf_counter() - began)
