"""Helpers for controller-level tests of the cloud types: a SourceContext whose Api backs off in
milliseconds, and a bearer credential that asks a fake provider for a new token after a 401."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from pixsrc.api import Api, RateLimit, RetryPolicy
from pixsrc.types import SourceContext

FAST = RetryPolicy(base=0.001, cap=0.01, deadline=30)


@dataclasses.dataclass
class FastContext(SourceContext):
    """The retry logic runs, the test does not wait (unless it gives its own ``policy``).
    ``api_limit``: a generous rate limit independent of the provider's settings; None keeps those."""

    policy: RetryPolicy = FAST
    api_limit: RateLimit | None = dataclasses.field(default_factory=lambda: RateLimit(16))

    def api(self, **options: Any) -> Api:
        options.setdefault("policy", self.policy)
        if self.api_limit is not None:
            options.setdefault("limit", self.api_limit)
        return super().api(**options)


class FakeBearer:
    """A real TransferAuth for controller tests: ``issue_token`` (a fake's) gives a new token after
    a 401, as a refresh would; ``refreshes`` counts them."""

    def __init__(self, issue_token: Callable[[], str]) -> None:
        self.issue_token = issue_token
        self.token = issue_token()
        self.refreshes = 0

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def unauthorized(self, sent_headers: Mapping[str, str]) -> None:
        self.refreshes += 1
        self.token = self.issue_token()
