"""Two OAuth 2.0 source types for testing pixsrc's login against a real OpenID Connect server.

``demo-oauth`` is a public native client (PKCE, any loopback port, no secret); ``demo-oauth-secret``
is a confidential client (HTTP Basic secret at the token endpoint, a fixed redirect port,
rotating refresh tokens), the shape of Pinterest. Both list one asset: the signed-in user's
profile from ``{api_base_url}/me`` (a protected resource, so each listing proves the access token
works on the API plane), and download it again through the engine with the same session as the
transfer's ``auth`` (so each fetch proves it on the data plane too). The placeholder URLs must be
overridden in ``[providers.<name>]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from pixsrc.api import ApiError, RetryPolicy
from pixsrc.errors import AuthRequired, SourceUnavailable
from pixsrc.types import (
    Asset,
    AuthSpec,
    Checksum,
    OAuthProvider,
    SourceConfig,
    SourceContext,
    SourceType,
    Transfer,
    TransferAuth,
    field,
)

_PLACEHOLDER = "http://127.0.0.1:9"  # nothing listens there: tests point every URL at their server


class DemoOAuthConfig(SourceConfig):
    filename: str = field("profile.json", label="File name for the profile")


class DemoOAuthController:
    def __init__(self, context: SourceContext) -> None:
        self.config: DemoOAuthConfig = context.config
        self.me_url = context.provider.api_base_url.rstrip("/") + "/me"
        self.auth: TransferAuth | None = context.auth
        # one retry, soon: a test server that is down should fail the test quickly
        self.api = context.api(policy=RetryPolicy(retries=1, base=0.1), headers={"Accept": "application/json"})

    def _profile(self) -> bytes:
        try:
            response = self.api.get(self.me_url)
        except ApiError as exc:
            raise SourceUnavailable(str(exc)) from None
        if response.status_code == 401:
            raise AuthRequired(f"the server refused the access token at {self.me_url}")
        if response.status_code != 200:
            raise SourceUnavailable(f"HTTP {response.status_code} from {self.me_url}")
        return response.content

    def verify(self) -> str | None:
        try:
            return str(json.loads(self._profile()).get("sub"))
        except (ValueError, AttributeError):
            raise SourceUnavailable(f"{self.me_url} did not answer a JSON profile") from None

    def list_assets(self) -> Iterator[Asset]:
        body = self._profile()
        digest = hashlib.sha256(body).hexdigest()
        yield Asset(id="profile", path=self.config.filename, version=digest, size=len(body),
                    media_type="application/json", checksum=Checksum("sha256", digest))

    def transfer(self, asset: Asset) -> Transfer:
        # the same protected resource again, through the engine: the bearer token on the data plane
        return Transfer(url=self.me_url, headers={"Accept": "application/json"}, auth=self.auth,
                        resumable=False)

    def close(self) -> None:
        self.api.close()


PUBLIC = OAuthProvider(
    name="demo-oidc", display_name="Demo OIDC", authorize_url=f"{_PLACEHOLDER}/auth",
    token_url=f"{_PLACEHOLDER}/token", revoke_url=f"{_PLACEHOLDER}/token/revocation", api_base_url=_PLACEHOLDER,
    pkce=True, secret="none", loopback_port=None, authorize_params=(("prompt", "consent"),),
)
CONFIDENTIAL = OAuthProvider(
    name="demo-confidential", display_name="Demo Confidential", authorize_url=f"{_PLACEHOLDER}/auth",
    token_url=f"{_PLACEHOLDER}/token", revoke_url=f"{_PLACEHOLDER}/token/revocation", api_base_url=_PLACEHOLDER,
    pkce=False, secret="required", client_auth="basic", loopback_port=53682, rotates_refresh_token=True,
    refresh_token_days=60, limits_note="test provider: refresh tokens rotate on every refresh",
    authorize_params=(("prompt", "consent"),),
)

DEMO_OAUTH = SourceType(
    id="demo-oauth", name="Demo OAuth (public client)", category="web",
    description="Test type: the signed-in user's profile from an OpenID Connect server.",
    config_model=DemoOAuthConfig, factory=DemoOAuthController,
    auth=AuthSpec(kind="oauth2", provider="demo-oidc", scopes=("openid", "offline_access"), oauth=PUBLIC),
)
DEMO_OAUTH_SECRET = SourceType(
    id="demo-oauth-secret", name="Demo OAuth (confidential client)", category="web",
    description="Test type: like demo-oauth, with a client secret and rotating refresh tokens.",
    config_model=DemoOAuthConfig, factory=DemoOAuthController,
    auth=AuthSpec(kind="oauth2", provider="demo-confidential", scopes=("openid", "offline_access"),
                  oauth=CONFIDENTIAL),
)
