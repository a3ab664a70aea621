"""HTTP request counts and latencies by route template (`/jobs/{job_id}`, never the raw path), as ASGI middleware."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics import ServiceMetrics


class HttpMetricsMiddleware:
    """Counts every HTTP request and times it until its body is sent; streams are timed until they end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._metrics: ServiceMetrics | None = None
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

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
                count, latency = self._series(service.metrics, scope["method"], route, status)
                count.inc()
                latency.observe(time.perf_counter() - began)

    def _series(self, metrics: ServiceMetrics, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        # labels() takes a lock and builds its key on every call; the series of a route are looked up once.
        if metrics is not self._metrics:  # a new service (the app was started again)
            self._metrics, self._children = metrics, {}
        key = (method, route, status)
        series = self._children.get(key)
        if series is None:
            series = (
                metrics.http_requests.labels(method, route, str(status)),
                metrics.http_latency.labels(method, route),
            )
            self._children[key] = series
        return series
