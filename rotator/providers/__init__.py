"""Token endpoints: Salesforce's JWT bearer flow and the generic RFC 7523 grant."""

from __future__ import annotations

from rotator.config import CredentialConfig
from rotator.providers.base import Provider, TokenResponse
from rotator.providers.jwt_bearer import JwtBearerProvider
from rotator.providers.salesforce import SalesforceProvider

__all__ = ["Provider", "TokenResponse", "build_provider"]


def build_provider(name: str, config: CredentialConfig) -> Provider:
    if config.provider == "salesforce":
        return SalesforceProvider(name, config)
    return JwtBearerProvider(name, config)
