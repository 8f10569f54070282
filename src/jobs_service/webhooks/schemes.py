"""The verifier of each configured webhook source, as the gateway builds it at start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs_service.core.errors import ConfigurationError
from jobs_service.webhooks.verification import build_scheme

if TYPE_CHECKING:
    from jobs_service.core.settings import Settings, WebhookSource
    from jobs_service.webhooks.verification import Scheme

__all__ = ["build_webhook_schemes", "source_scheme"]


def source_scheme(source: WebhookSource) -> Scheme:
    """The verifier of one source; a ValueError names what is wrong (a secret that does
    not decode, say), never a secret's value. ``jobsctl check`` builds them too, so it
    finds what would stop the gateway."""
    return build_scheme(
        source.scheme,
        secrets=[secret.get_secret_value() for secret in source.secrets],
        tolerance_s=source.tolerance_s,
        header=source.signature_header,
        encoding=source.signature_encoding,
    )


def build_webhook_schemes(settings: Settings) -> dict[str, Scheme]:
    """One verifier per configured source, built once (decoding secrets is not free)."""
    schemes: dict[str, Scheme] = {}
    for name, source in settings.webhooks.sources.items():
        try:
            schemes[name] = source_scheme(source)
        except ValueError as exc:
            msg = f"webhooks.sources.{name}: {exc}"
            raise ConfigurationError(msg) from None
    return schemes
