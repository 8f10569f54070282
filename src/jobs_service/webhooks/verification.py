"""Is this webhook really from its claimed sender? One small policy per signing scheme.

A webhook endpoint is a public URL that turns requests into jobs, so anyone who finds it
can try to start work. Every provider proves authorship differently (a header HMAC, a
timestamped HMAC, a shared client state), but the route only needs one question
answered: authentic or not, and if so what the headers said about the event. Each scheme
is therefore a small object with one deciding method, ``verify``, that raises
:class:`VerificationError` or returns :class:`Verified`.

The rules every scheme keeps, because each one closes a known hole:

* The MAC is computed over the *raw* body bytes. Parsing and re-serialising JSON changes
  whitespace and key order and breaks (or, worse, launders) signatures.
* Comparison is constant-time (:func:`hmac.compare_digest`), so response timing does not
  turn the endpoint into a signing oracle.
* Several secrets may be configured and any one may match: rotating a secret means
  adding the new one, waiting for the sender to switch, then removing the old one, with
  no window in which genuine deliveries are refused.
* Timed schemes refuse timestamps outside the tolerance in *both* directions: old ones
  are replays, and far-future ones would stay replayable for longer than intended.
* Error messages name the header and the problem, never a secret, an expected signature
  or a received one: they end up in logs and problem documents.

The MAC is checked before the timestamp, so ``stale_timestamp`` and ``future_timestamp``
mean "authentic but outside the window" (a replay or a skewed clock), never "garbage".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast, get_args

__all__ = [
    "REASONS",
    "GitHub",
    "GraphClientState",
    "HmacSha256",
    "NoVerification",
    "Reason",
    "Scheme",
    "StandardWebhooks",
    "Stripe",
    "TeamsOutgoing",
    "VerificationError",
    "Verified",
    "build_scheme",
]

Reason = Literal[
    "missing_header",
    "bad_signature",
    "stale_timestamp",
    "future_timestamp",
    "malformed_header",
    "bad_client_state",
]
REASONS: frozenset[str] = frozenset(get_args(Reason))

Encoding = Literal["hex", "base64", "auto"]
_ENCODINGS: frozenset[str] = frozenset(get_args(Encoding))

_DEFAULT_TOLERANCE_S = 300
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII digits only; int() would take "+1_0 "
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_WHSEC_PREFIX = "whsec_"


class VerificationError(Exception):
    """The request is not provably from its sender; ``reason`` is for code, ``message`` logs.

    ``reason`` is one of :data:`REASONS` so the route can count and map failures without
    parsing prose; ``message`` names the header and the problem but never a secret or a
    signature, because it is written to logs and may reach the caller.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"VerificationError(reason={self.reason!r}, message={self.message!r})"


@dataclass(frozen=True)
class Verified:
    """What an authentic request's headers told us, for idempotency and routing.

    ``event_id`` is the sender's delivery id (stable across retries, so it can serve as an
    idempotency key); ``timestamp`` is set only when the scheme signs one.
    """

    event_id: str | None
    event_type: str | None
    timestamp: int | None


_NOTHING_LEARNED = Verified(event_id=None, event_type=None, timestamp=None)


class Scheme(Protocol):
    """The one question the webhook route asks of every signing scheme."""

    name: str

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Verified:
        """Raise VerificationError unless the request is authentic.

        Header names are case-insensitive; ``now`` is unix seconds, passed in so that
        tolerance windows are testable without a clock.
        """
        ...


class StandardWebhooks:
    """The Standard Webhooks scheme (also Svix's, with ``webhook-`` headers).

    Signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 keyed by the
    base64-decoded secret; ``webhook-signature`` lists space-separated ``v1,<base64>``
    entries so a sender can sign with an old and a new key during rotation. Other versions
    (``v1a`` is Ed25519) are ignored rather than refused, as the spec asks.
    """

    name = "standard"

    def __init__(self, secrets: Sequence[str], tolerance_s: int = _DEFAULT_TOLERANCE_S) -> None:
        self._keys = tuple(
            _standard_key(secret, index)
            for index, secret in enumerate(_require_secrets(secrets, self.name), start=1)
        )
        self._tolerance_s = _require_tolerance(tolerance_s)

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Verified:
        """Accept when one v1 entry is the MAC of id, timestamp and body under any key."""
        found = _lowered(headers)
        event_id = _required(found, "webhook-id")
        raw_timestamp = _required(found, "webhook-timestamp")
        signature_header = _required(found, "webhook-signature")
        timestamp = _parse_timestamp(raw_timestamp, "webhook-timestamp")
        candidates = _standard_signatures(signature_header)
        signed = f"{event_id}.{raw_timestamp}.".encode() + body
        expected = (_mac(key, signed) for key in self._keys)
        if not _matches_any(expected, candidates):
            raise VerificationError("bad_signature", "webhook-signature does not match")
        _require_fresh(timestamp, now, self._tolerance_s)
        return Verified(event_id=event_id, event_type=None, timestamp=timestamp)


class GitHub:
    """GitHub's ``X-Hub-Signature-256: sha256=<hex>`` over the body, keyed by the secret.

    The legacy SHA-1 ``X-Hub-Signature`` is deliberately not accepted: GitHub sends both,
    and falling back to the weaker one would let a downgrade through.

    Only the body is signed. ``X-GitHub-Delivery`` is therefore no event id: anyone who
    captured one delivery could send it again under new delivery ids, each a new event
    and a new run. The id is left to the body's hash (see
    :mod:`~jobs_service.webhooks.events`); GitHub's redeliveries send the same bytes.
    The event type can only come from ``X-GitHub-Event`` (GitHub's payloads do not name
    their event), unsigned as well: the docs say what that allows.
    """

    name = "github"

    def __init__(self, secrets: Sequence[str]) -> None:
        self._keys = tuple(s.encode() for s in _require_secrets(secrets, self.name))

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Verified:
        """Accept when the hex digest is the body's HMAC under any configured secret."""
        found = _lowered(headers)
        value = _required(found, "X-Hub-Signature-256")
        hex_digest = _strip_prefix(value, "sha256=")
        digest = _from_hex(hex_digest) if hex_digest is not None else None
        if digest is None:
            msg = "X-Hub-Signature-256 is not 'sha256=' followed by 64 hex digits"
            raise VerificationError("malformed_header", msg)
        if not _matches_any((_mac(key, body) for key in self._keys), (digest,)):
            raise VerificationError("bad_signature", "X-Hub-Signature-256 does not match")
        return Verified(
            event_id=None, event_type=_optional(found, "X-GitHub-Event"), timestamp=None
        )


class Stripe:
    """Stripe's ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`` over ``{t}.{body}``.

    The key is the whole signing secret *including* its ``whsec_`` prefix, as UTF-8:
    unlike Standard Webhooks, Stripe does not base64-decode it. Several ``v1`` entries
    appear while Stripe rolls a secret; ``v0`` (test-mode legacy) and unknown schemes are
    ignored so that a forged ``v0`` cannot be what gets checked.
    """

    name = "stripe"

    def __init__(self, secrets: Sequence[str], tolerance_s: int = _DEFAULT_TOLERANCE_S) -> None:
        self._keys = tuple(s.encode() for s in _require_secrets(secrets, self.name))
        self._tolerance_s = _require_tolerance(tolerance_s)

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Verified:
        """Accept when one v1 entry is the MAC of the timestamp and body under any key."""
        raw_timestamp, candidates = _stripe_fields(_required(_lowered(headers), "Stripe-Signature"))
        timestamp = _parse_timestamp(raw_timestamp, "Stripe-Signature t")
        signed = f"{raw_timestamp}.".encode() + body
        if not _matches_any((_mac(key, signed) for key in self._keys), candidates):
            raise VerificationError("bad_signature", "Stripe-Signature does not match")
        _require_fresh(timestamp, now, self._tolerance_s)
        return Verified(event_id=None, event_type=None, timestamp=timestamp)


class HmacSha256:
    """The generic scheme many small providers use: an HMAC-SHA256 of the body in a header.

    Providers disagree on hex or base64 and on a ``sha256=`` style prefix, so both are
    configurable. A SHA-256 digest is 64 characters in hex and 44 in base64, so ``auto``
    can never mistake one for the other. The prefix is stripped when present (compared
    case-insensitively) and not required, so the default also fits bare digests.
    """

    name = "hmac-sha256"

    def __init__(
        self,
        secrets: Sequence[str],
        header: str,
        encoding: Encoding = "auto",
        prefix: str | None = "sha256=",
    ) -> None:
        self._keys = tuple(s.encode() for s in _require_secrets(secrets, self.name))
        if not isinstance(header, str) or not header.strip():
            msg = "scheme 'hmac-sha256' needs the name of the header carrying the signature"
            raise ValueError(msg)
        self._header = header.strip()
        self._encoding = _require_encoding(encoding)
        self._prefix = prefix or None

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Verified:
        """Accept when the header's digest is the body's HMAC under any configured secret."""
        value = _required(_lowered(headers), self._header)
        if self._prefix is not None:
            value = _strip_prefix(value, self._prefix) or value
        digest = _decode_digest(value, self._encoding)
        if digest is None:
            msg = f"{self._header} is not a {self._encoding_label()} SHA-256 digest"
            raise VerificationError("malformed_header", msg)
        if not _matches_any((_mac(key, body) for key in self._keys), (digest,)):
            raise VerificationError("bad_signature", f"{self._header} does not match")
        return _NOTHING_LEARNED

    def _encoding_label(self) -> str:
        return "hex or base64" if self._encoding == "auto" else self._encoding


class TeamsOutgoing:
    """A Microsoft Teams outgoing webhook: ``Authorization: HMAC <base64>`` over the body.

    The key is the base64-decoded security token Teams shows once when the webhook is
    created; a token that does not decode is a configuration error, caught at start-up.
    """

    name = "teams"

    def __init__(self, secrets: Sequence[str]) -> None:
        self._keys = tuple(
            _base64_key(secret, index, self.name, "security token")
            for index, secret in enumerate(_require_secrets(secrets, self.name), start=1)
        )

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Verified:
        """Accept when the HMAC credential is the body's MAC under any configured token."""
        value = _required(_lowered(headers), "Authorization")
        scheme, _, credential = value.partition(" ")
        digest = _from_base64(credential.strip()) if scheme.upper() == "HMAC" else None
        digest = _sha256_length(digest)
        if digest is None:
            msg = "Authorization is not 'HMAC' followed by a base64 SHA-256 digest"
            raise VerificationError("malformed_header", msg)
        if not _matches_any((_mac(key, body) for key in self._keys), (digest,)):
            raise VerificationError("bad_signature", "Authorization HMAC does not match")
        return _NOTHING_LEARNED


class GraphClientState:
    """Microsoft Graph change notifications, authenticated by the subscription's clientState.

    Graph signs nothing: the only proof is that each notification echoes the clientState
    secret given when the subscription was created. One POST may batch notifications for
    several subscriptions, so *every* one must carry a configured secret; otherwise a
    forged notification could ride along with a genuine one. The ``?validationToken``
    handshake has no body to check and is answered by the route before this runs.
    """

    name = "graph"

    def __init__(self, secrets: Sequence[str]) -> None:
        self._states = tuple(s.encode() for s in _require_secrets(secrets, self.name))

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Verified:
        """Accept when the body is a notification collection and every clientState matches."""
        for position, state in enumerate(_client_states(body), start=1):
            if not _matches_any(self._states, (state.encode(),)):
                msg = f"notification {position} has a clientState that matches no secret"
                raise VerificationError("bad_client_state", msg)
        return _NOTHING_LEARNED


class NoVerification:
    """Accepts every request: for local development and tests only.

    It exists so that "no verification" is an explicit, visible choice in configuration
    that the route can refuse in production, rather than an empty secrets list.
    """

    name = "none"

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> Verified:
        """Accept unconditionally; the route decides whether that is allowed."""
        return _NOTHING_LEARNED


@dataclass(frozen=True)
class _Options:
    secrets: Sequence[str]
    tolerance_s: int
    header: str | None
    encoding: str


def _build_hmac(options: _Options) -> Scheme:
    if options.header is None:
        msg = "scheme 'hmac-sha256' needs the header option (the header carrying the signature)"
        raise ValueError(msg)
    encoding = _require_encoding(options.encoding)
    return HmacSha256(options.secrets, header=options.header, encoding=encoding)


_BUILDERS: dict[str, Callable[[_Options], Scheme]] = {
    "standard": lambda o: StandardWebhooks(o.secrets, tolerance_s=o.tolerance_s),
    "github": lambda o: GitHub(o.secrets),
    "stripe": lambda o: Stripe(o.secrets, tolerance_s=o.tolerance_s),
    "hmac-sha256": _build_hmac,
    "teams": lambda o: TeamsOutgoing(o.secrets),
    "graph": lambda o: GraphClientState(o.secrets),
    "none": lambda o: NoVerification(),
}


def build_scheme(
    name: str,
    *,
    secrets: Sequence[str],
    tolerance_s: int = _DEFAULT_TOLERANCE_S,
    header: str | None = None,
    encoding: str = "auto",
) -> Scheme:
    """Turn a webhook's configuration into its scheme, failing at start-up, not per request.

    Options a scheme does not use are ignored (``tolerance_s`` only matters to the timed
    schemes, ``header`` and ``encoding`` only to ``hmac-sha256``); ``none`` ignores
    ``secrets`` too. Any problem is a ValueError whose message names the option to fix.
    """
    builder = _BUILDERS.get(name.strip().lower()) if isinstance(name, str) else None
    if builder is None:
        known = ", ".join(sorted(_BUILDERS))
        msg = f"unknown webhook verification scheme {name!r} (use one of: {known})"
        raise ValueError(msg)
    return builder(_Options(secrets, tolerance_s, header, encoding))


def _require_secrets(secrets: Sequence[str], scheme: str) -> tuple[str, ...]:
    """Refuse what would silently weaken the check: no secrets, blanks, or one bare string.

    A bare string is a Sequence[str] too, and iterating it would make every character a
    one-letter secret; the message names positions, never values.
    """
    if isinstance(secrets, str | bytes) or not isinstance(secrets, Sequence):
        msg = f"scheme {scheme!r} needs secrets as a list of strings, not a single value"
        raise ValueError(msg)
    if not secrets:
        msg = f"scheme {scheme!r} needs at least one secret"
        raise ValueError(msg)
    for index, secret in enumerate(secrets, start=1):
        if not isinstance(secret, str) or not secret:
            msg = f"secret #{index} for scheme {scheme!r} must be a non-empty string"
            raise ValueError(msg)
    return tuple(secrets)


def _require_tolerance(tolerance_s: int) -> int:
    if isinstance(tolerance_s, bool) or not isinstance(tolerance_s, int) or tolerance_s <= 0:
        msg = f"tolerance_s must be a positive number of seconds, got {tolerance_s!r}"
        raise ValueError(msg)
    return tolerance_s


def _require_encoding(encoding: str) -> Encoding:
    if encoding not in _ENCODINGS:
        msg = f"encoding must be one of hex, base64, auto; got {encoding!r}"
        raise ValueError(msg)
    return cast(Encoding, encoding)


def _standard_key(secret: str, index: int) -> bytes:
    """Standard Webhooks secrets are ``whsec_<base64>``; a bare base64 secret also works."""
    encoded = secret.removeprefix(_WHSEC_PREFIX)
    return _base64_key(encoded, index, StandardWebhooks.name, "secret (after whsec_)")


def _base64_key(encoded: str, index: int, scheme: str, what: str) -> bytes:
    key = _from_base64(encoded.strip())
    if key is None:
        msg = f"{what} #{index} for scheme {scheme!r} is empty or not valid base64"
        raise ValueError(msg)
    return key


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    """HTTP header names are case-insensitive; not every Mapping we are handed knows that."""
    return {name.lower(): value for name, value in headers.items()}


def _optional(found: Mapping[str, str], name: str) -> str | None:
    value = found.get(name.lower(), "").strip()
    return value or None


def _required(found: Mapping[str, str], name: str) -> str:
    value = _optional(found, name)
    if value is None:
        raise VerificationError("missing_header", f"the {name} header is missing or empty")
    return value


def _strip_prefix(value: str, prefix: str) -> str | None:
    """The rest of `value` after `prefix` (any case), or None when it does not start so."""
    if value[: len(prefix)].lower() != prefix.lower():
        return None
    return value[len(prefix) :]


def _parse_timestamp(text: str, where: str) -> int:
    if not _UNIX_SECONDS.fullmatch(text):
        raise VerificationError("malformed_header", f"{where} is not unix seconds")
    return int(text)


def _require_fresh(timestamp: int, now: float, tolerance_s: int) -> None:
    """Both directions: an old timestamp is a replay, a future one stretches the window."""
    if timestamp < now - tolerance_s:
        msg = f"signed {now - timestamp:.0f}s ago, more than the {tolerance_s}s allowed"
        raise VerificationError("stale_timestamp", msg)
    if timestamp > now + tolerance_s:
        msg = f"signed {timestamp - now:.0f}s in the future, more than the {tolerance_s}s allowed"
        raise VerificationError("future_timestamp", msg)


def _standard_signatures(header: str) -> tuple[bytes, ...]:
    """The decoded ``v1`` entries; undecodable ones are kept out rather than fatal.

    One garbled entry must not hide a good one next to it, so only a header with no v1
    entry at all is malformed.
    """
    entries = [entry.partition(",") for entry in header.split()]
    v1 = [signature for version, comma, signature in entries if comma and version == "v1"]
    if not v1:
        raise VerificationError("malformed_header", "webhook-signature has no v1 entry")
    return tuple(d for d in (_from_base64(s) for s in v1) if d is not None)


def _stripe_fields(header: str) -> tuple[str, tuple[bytes, ...]]:
    """The raw ``t`` value and the decoded ``v1`` signatures of a Stripe-Signature header."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, equals, value = item.strip().partition("=")
        if not equals:
            raise VerificationError("malformed_header", "Stripe-Signature has an item without '='")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1:
        raise VerificationError("malformed_header", "Stripe-Signature needs exactly one t=")
    if not signatures:
        raise VerificationError("malformed_header", "Stripe-Signature has no v1 signature")
    decoded = tuple(d for d in (_from_hex(s) for s in signatures) if d is not None)
    return timestamps[0], decoded


def _client_states(body: bytes) -> list[str]:
    """Every notification's clientState; a body that is not a collection of them is refused.

    No dedicated reason exists for an unreadable body: whatever it is, no clientState in it
    could be checked, which is what ``bad_client_state`` reports.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise VerificationError("bad_client_state", "body is not JSON") from None
    notifications = document.get("value") if isinstance(document, dict) else None
    if not isinstance(notifications, list) or not notifications:
        msg = "body has no 'value' list of notifications"
        raise VerificationError("bad_client_state", msg)
    states: list[str] = []
    for position, notification in enumerate(notifications, start=1):
        state = notification.get("clientState") if isinstance(notification, dict) else None
        if not isinstance(state, str) or not state:
            msg = f"notification {position} has no clientState"
            raise VerificationError("bad_client_state", msg)
        states.append(state)
    return states


def _mac(key: bytes, message: bytes) -> bytes:
    # The one-shot form: OpenSSL in one call, no HMAC object per request.
    return hmac.digest(key, message, "sha256")


def _matches_any(expected: Iterable[bytes], candidates: Sequence[bytes]) -> bool:
    """Compare every pair in constant time, without stopping at the first match.

    Not short-circuiting keeps the time independent of which secret or entry matched.
    """
    matched = False
    for mac in expected:
        for candidate in candidates:
            matched |= hmac.compare_digest(mac, candidate)
    return matched


def _from_hex(text: str) -> bytes | None:
    """Strict: bytes.fromhex would also take embedded spaces."""
    return bytes.fromhex(text) if _HEX_SHA256.fullmatch(text) else None


def _from_base64(text: str) -> bytes | None:
    """Strict standard base64 (b64decode would skip junk); empty decodes to nothing."""
    try:
        return base64.b64decode(text, validate=True) or None
    except ValueError:  # binascii.Error, or non-ASCII text
        return None


def _sha256_length(digest: bytes | None) -> bytes | None:
    """A header that must hold one SHA-256 digest holding anything else is malformed."""
    return digest if digest is not None and len(digest) == hashlib.sha256().digest_size else None


def _decode_digest(text: str, encoding: Encoding) -> bytes | None:
    if encoding == "hex" or (encoding == "auto" and _HEX_SHA256.fullmatch(text)):
        return _from_hex(text)
    return _sha256_length(_from_base64(text))
