"""Two OAuth 2.0 source types for testing pixsrc's login against a real OpenID Connect server.

``demo-oauth`` is a public native client (PKCE, any loopback port, no secret); ``demo-oauth-secret``
is a confidential client (HTTP Basic secret at the token endpoint, a fixed redirect port,
rotating refresh tokens), the shape of Pinterest. Both list one asset: the signed-in user's
profile from ``{api_base_url}/me`` (a protected resource, so each listing proves the access token
works). The placeholder URLs must be overridden in ``[providers.<name>]``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

from pixsrc.errors import AssetError, AuthRequired, SourceUnavailable
from pixsrc.types import (
    Asset,
    AuthSpec,
    Checksum,
    OAuthProvider,
    SourceConfig,
    SourceContext,
    SourceType,
    field,
)

_PLACEHOLDER = "http://127.0.0.1:9"  # nothing listens there: tests point every URL at their server


class DemoOAuthConfig(SourceConfig):
    filename: str = field("profile.json", label="File name for the profile")


class _Stream:
    def __init__(self, data: bytes, offset: int) -> None:
        self._io = io.BytesIO(data[offset:])
        self.offset = offset

    def read(self, size: int) -> bytes:
        return self._io.read(size)

    def close(self) -> None:
        pass


class DemoOAuthController:
    def __init__(self, context: SourceContext) -> None:
        self.config: DemoOAuthConfig = context.config
        self.me_url = context.provider.api_base_url.rstrip("/") + "/me"
        self.http = context.http(retries=1)
        self._body: bytes | None = None

    def _profile(self) -> bytes:
        response = self.http.get(self.me_url, {"Accept": "application/json"})
        body = response.read_all(1 << 20)
        if response.status == 401:
            raise AuthRequired(f"the server refused the access token at {self.me_url}")
        if response.status != 200:
            raise SourceUnavailable(f"HTTP {response.status} from {self.me_url}")
        return body

    def verify(self) -> str | None:
        import json

        return str(json.loads(self._profile()).get("sub"))

    def list_assets(self) -> Iterator[Asset]:
        self._body = self._profile()
        digest = hashlib.sha256(self._body).hexdigest()
        yield Asset(id="profile", path=self.config.filename, version=digest, size=len(self._body),
                    media_type="application/json", checksum=Checksum("sha256", digest))

    def open(self, asset: Asset, offset: int = 0) -> _Stream:
        if self._body is None:
            raise AssetError("list before opening")
        return _Stream(self._body, offset)

    def close(self) -> None:
        self.http.close()


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
