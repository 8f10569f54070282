"""Webhook signature verification, scheme by scheme, against independently made vectors.

Where a provider publishes a test vector it is used verbatim (sources next to each
constant). Everywhere else the expected signature is computed here, with hmac, hashlib
and base64 straight from the provider's description of the scheme, never by calling the
module under test, so a shared misreading cannot make both sides agree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from jobs_service.webhooks.verification import (
    REASONS,
    GitHub,
    GraphClientState,
    HmacSha256,
    NoVerification,
    Scheme,
    StandardWebhooks,
    Stripe,
    TeamsOutgoing,
    VerificationError,
    Verified,
    build_scheme,
)

# Standard Webhooks reference-library vector ("sign function works" / test_sign_function):
# https://github.com/standard-webhooks/standard-webhooks/blob/main/libraries/python/tests/test_webhooks.py
# https://github.com/standard-webhooks/standard-webhooks/blob/main/libraries/javascript/src/webhook.test.ts
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_BARE_SECRET = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SW_OTHER_SECRET = "whsec_" + base64.b64encode(b"another endpoint's 24+ byte key").decode()

# GitHub's documented vector, "Testing the webhook payload validation":
# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_HEX = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
GH_SIGNATURE = "sha256=" + GH_HEX
GH_OTHER_SECRET = "rotated GitHub secret"

# Stripe publishes no full vector; the scheme is from https://docs.stripe.com/webhooks
# ("Verify signatures manually") and Stripe's own library,
# https://www.rubydoc.info/gems/stripe/Stripe/Webhook/Signature (compute_signature):
# HMAC-SHA256, key = the whole endpoint secret as text, message = "{t}.{raw body}", hex in v1.
STRIPE_SECRET = "whsec_test_stripe_endpoint_secret"
STRIPE_OTHER_SECRET = "whsec_test_stripe_rolled_secret"
STRIPE_T = 1_700_000_000
STRIPE_BODY = b'{"id":"evt_1","object":"event","type":"invoice.paid"}'

# Teams publishes no vector; the scheme is from
# https://docs.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/add-outgoing-webhook
# (HMAC-SHA256 of the body, key = base64-decoded security token, "HMAC <base64>"). The
# token is the example one in Microsoft's Node.js sample
# https://github.com/OfficeDev/msteams-samples-outgoing-webhook-nodejs/blob/master/app.js
TEAMS_TOKEN = "+ZaRRMC8+mpnfGaGsBOmkIFt98bttL5YQRq3p2tXgcE="
TEAMS_OTHER_TOKEN = base64.b64encode(b"a second outgoing webhook token").decode()
TEAMS_BODY = b'{"type":"message","text":"<at>Jobs</at> run nightly-report"}'

# Graph's notification collection shape ({"value": [changeNotification, ...]}) and the
# "secretClientValue" clientState from its create-subscription example:
# https://learn.microsoft.com/en-us/graph/api/resources/changenotificationcollection
# https://learn.microsoft.com/en-us/graph/api/subscription-post-subscriptions
GRAPH_STATE = "secretClientValue"
GRAPH_OTHER_STATE = "rotatedClientValue"

GENERIC_SECRET = "generic provider secret"
GENERIC_BODY = b'{"event":"build.finished","id":42}'


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac_sha256(key, f"{msg_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(mac).decode()


def standard_headers(
    signature: str = SW_SIGNATURE, timestamp: int = SW_TIMESTAMP, msg_id: str = SW_ID
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac_sha256(secret.encode(), body).hex()


def stripe_v1(secret: str, timestamp: int, body: bytes) -> str:
    return hmac_sha256(secret.encode(), f"{timestamp}.".encode() + body).hex()


def stripe_headers(secret: str = STRIPE_SECRET, timestamp: int = STRIPE_T) -> dict[str, str]:
    return {"Stripe-Signature": f"t={timestamp},v1={stripe_v1(secret, timestamp, STRIPE_BODY)}"}


def teams_authorization(token: str, body: bytes) -> str:
    mac = hmac_sha256(base64.b64decode(token), body)
    return "HMAC " + base64.b64encode(mac).decode()


def graph_body(*states: str | None) -> bytes:
    notifications: list[dict[str, Any]] = []
    for number, state in enumerate(states):
        notification: dict[str, Any] = {
            "id": f"lsgTZMr9KwAAA{number}",
            "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
            "subscriptionExpirationDateTime": "2026-03-20T11:00:00.0000000Z",
            "changeType": "created",
            "resource": "users/{user-guid}@{tenant-guid}/messages/{long-id}",
            "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
        }
        if state is not None:
            notification["clientState"] = state
        notifications.append(notification)
    return json.dumps({"value": notifications}).encode()


def generic_hex(secret: str, body: bytes) -> str:
    return hmac_sha256(secret.encode(), body).hex()


def generic_base64(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac_sha256(secret.encode(), body)).decode()


def refused(
    scheme: Scheme, body: bytes, headers: dict[str, str], now: float = 0
) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        scheme.verify(body, headers, now=now)
    assert caught.value.reason in REASONS
    return caught.value


# --- Standard Webhooks -------------------------------------------------------------------


def test_standard_accepts_the_published_vector() -> None:
    """The reference libraries' signature verifies and reports id and timestamp."""
    verified = StandardWebhooks([SW_SECRET]).verify(SW_BODY, standard_headers(), now=SW_TIMESTAMP)
    assert verified == Verified(event_id=SW_ID, event_type=None, timestamp=SW_TIMESTAMP)


def test_standard_test_helper_agrees_with_the_published_vector() -> None:
    """The in-test signer reproduces the published signature, so it can be trusted below."""
    assert standard_signature(SW_SECRET, SW_ID, SW_TIMESTAMP, SW_BODY) == SW_SIGNATURE


def test_standard_accepts_a_bare_base64_secret() -> None:
    """A secret without the whsec_ prefix is the same key."""
    verified = StandardWebhooks([SW_BARE_SECRET]).verify(
        SW_BODY, standard_headers(), now=SW_TIMESTAMP
    )
    assert verified.event_id == SW_ID


def test_standard_header_names_are_case_insensitive() -> None:
    """Webhook-Id and WEBHOOK-SIGNATURE are the same headers as their lower-case forms."""
    headers = {
        "Webhook-Id": SW_ID,
        "WEBHOOK-TIMESTAMP": str(SW_TIMESTAMP),
        "Webhook-Signature": SW_SIGNATURE,
    }
    assert StandardWebhooks([SW_SECRET]).verify(SW_BODY, headers, now=SW_TIMESTAMP).event_id


def test_standard_refuses_a_tampered_body() -> None:
    """One changed byte in the body breaks the signature."""
    error = refused(
        StandardWebhooks([SW_SECRET]), b'{"test": 2432232315}', standard_headers(), SW_TIMESTAMP
    )
    assert error.reason == "bad_signature"


@pytest.mark.parametrize(
    "headers",
    [
        standard_headers(msg_id="msg_someone_else"),
        standard_headers(signature=standard_signature(SW_SECRET, SW_ID, SW_TIMESTAMP + 1, SW_BODY)),
    ],
    ids=["other-id", "signed-for-another-timestamp"],
)
def test_standard_signs_id_and_timestamp_too(headers: dict[str, str]) -> None:
    """Swapping the id or the timestamp under a valid signature is detected."""
    error = refused(StandardWebhooks([SW_SECRET]), SW_BODY, headers, SW_TIMESTAMP)
    assert error.reason == "bad_signature"


def test_standard_refuses_a_wrong_secret() -> None:
    """A signature made with another endpoint's secret does not verify."""
    error = refused(StandardWebhooks([SW_OTHER_SECRET]), SW_BODY, standard_headers(), SW_TIMESTAMP)
    assert error.reason == "bad_signature"


@pytest.mark.parametrize("signer", [SW_SECRET, SW_OTHER_SECRET], ids=["old", "new"])
def test_standard_accepts_old_and_new_secret_during_rotation(signer: str) -> None:
    """With both secrets configured, a delivery signed by either verifies."""
    signature = standard_signature(signer, SW_ID, SW_TIMESTAMP, SW_BODY)
    scheme = StandardWebhooks([SW_SECRET, SW_OTHER_SECRET])
    assert scheme.verify(SW_BODY, standard_headers(signature), now=SW_TIMESTAMP).timestamp


def test_standard_finds_the_valid_entry_among_several() -> None:
    """A space-separated list with bad v1, unknown v2 and v1a entries still finds the good v1."""
    header = " ".join(
        [
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            "v1,not*base64",
            SW_SIGNATURE,
            "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==",
        ]
    )
    scheme = StandardWebhooks([SW_SECRET])
    assert scheme.verify(SW_BODY, standard_headers(header), now=SW_TIMESTAMP).event_id == SW_ID


def test_standard_ignores_a_correct_digest_under_another_version() -> None:
    """The right digest labelled v2 is not a v1 signature, so nothing verifiable remains."""
    header = SW_SIGNATURE.replace("v1,", "v2,") + " v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    error = refused(StandardWebhooks([SW_SECRET]), SW_BODY, standard_headers(header), SW_TIMESTAMP)
    assert error.reason == "bad_signature"


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(-301, "stale_timestamp"), (301, "future_timestamp")],
    ids=["stale", "future"],
)
def test_standard_refuses_timestamps_outside_the_tolerance(offset: int, reason: str) -> None:
    """A correctly signed delivery more than tolerance_s old or ahead is refused."""
    timestamp = SW_TIMESTAMP + offset
    signature = standard_signature(SW_SECRET, SW_ID, timestamp, SW_BODY)
    scheme = StandardWebhooks([SW_SECRET], tolerance_s=300)
    error = refused(scheme, SW_BODY, standard_headers(signature, timestamp), SW_TIMESTAMP)
    assert error.reason == reason


@pytest.mark.parametrize("offset", [-300, 300])
def test_standard_accepts_timestamps_at_the_tolerance_edge(offset: int) -> None:
    """Exactly tolerance_s away in either direction is still inside the window."""
    timestamp = SW_TIMESTAMP + offset
    signature = standard_signature(SW_SECRET, SW_ID, timestamp, SW_BODY)
    verified = StandardWebhooks([SW_SECRET]).verify(
        SW_BODY, standard_headers(signature, timestamp), now=SW_TIMESTAMP
    )
    assert verified.timestamp == timestamp


def test_standard_checks_the_signature_before_the_clock() -> None:
    """A forged and stale delivery is reported as forged, not as merely late."""
    headers = standard_headers("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=")
    error = refused(StandardWebhooks([SW_SECRET]), SW_BODY, headers, SW_TIMESTAMP + 10_000)
    assert error.reason == "bad_signature"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_refuses_missing_headers(missing: str) -> None:
    """Each of the three headers is required, and an empty one counts as missing."""
    headers = standard_headers()
    del headers[missing]
    assert refused(StandardWebhooks([SW_SECRET]), SW_BODY, headers).reason == "missing_header"
    headers[missing] = "  "
    assert refused(StandardWebhooks([SW_SECRET]), SW_BODY, headers).reason == "missing_header"


@pytest.mark.parametrize(
    "headers",
    [
        {**standard_headers(), "webhook-timestamp": "hello"},
        {**standard_headers(), "webhook-timestamp": "1614265330.5"},
        {**standard_headers(), "webhook-timestamp": "-1614265330"},
        {**standard_headers(), "webhook-timestamp": "1_614_265_330"},
        {**standard_headers(), "webhook-timestamp": "1614265330000000"},
        {**standard_headers(), "webhook-signature": "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
        {
            **standard_headers(),
            "webhook-signature": "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        },
    ],
    ids=[
        "timestamp-word",
        "timestamp-fraction",
        "timestamp-negative",
        "timestamp-underscores",
        "timestamp-too-long",
        "signature-without-version",
        "signature-without-v1",
    ],
)
def test_standard_refuses_malformed_headers(headers: dict[str, str]) -> None:
    """Timestamps must be plain unix seconds and the signature list needs a v1 entry."""
    error = refused(StandardWebhooks([SW_SECRET]), SW_BODY, headers, SW_TIMESTAMP)
    assert error.reason == "malformed_header"


@pytest.mark.parametrize("signature", ["v1,", "v1,g0hM9SsE", "v1,@@@@"])
def test_standard_refuses_truncated_or_undecodable_signatures(signature: str) -> None:
    """A v1 entry that is cut short or not base64 verifies nothing."""
    headers = standard_headers(signature)
    error = refused(StandardWebhooks([SW_SECRET]), SW_BODY, headers, SW_TIMESTAMP)
    assert error.reason in {"bad_signature", "malformed_header"}


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_   ", "%%%"])
def test_standard_refuses_secrets_that_are_not_base64(secret: str) -> None:
    """A secret that cannot be a key fails at start-up, without echoing it."""
    with pytest.raises(ValueError, match="not valid base64") as caught:
        StandardWebhooks([SW_SECRET, secret])
    assert "#2" in str(caught.value)
    assert secret not in str(caught.value)


# --- GitHub ------------------------------------------------------------------------------


def test_github_accepts_the_documented_vector() -> None:
    """GitHub's published secret, payload and signature verify. The unsigned
    X-GitHub-Delivery is not taken for the event id (anyone could change it), the event
    type is read from X-GitHub-Event."""
    headers = {
        "X-Hub-Signature-256": GH_SIGNATURE,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Event": "push",
    }
    verified = GitHub([GH_SECRET]).verify(GH_BODY, headers, now=0)
    assert verified == Verified(event_id=None, event_type="push", timestamp=None)


def test_github_test_helper_agrees_with_the_documented_vector() -> None:
    """The in-test signer reproduces GitHub's signature, so it can be trusted below."""
    assert github_signature(GH_SECRET, GH_BODY) == GH_SIGNATURE


def test_github_header_names_are_case_insensitive_and_extras_optional() -> None:
    """Lower-case header names work and the delivery and event headers are optional."""
    verified = GitHub([GH_SECRET]).verify(GH_BODY, {"x-hub-signature-256": GH_SIGNATURE}, now=0)
    assert verified == Verified(event_id=None, event_type=None, timestamp=None)


def test_github_refuses_a_tampered_body() -> None:
    """A changed payload does not match the signature."""
    headers = {"X-Hub-Signature-256": GH_SIGNATURE}
    assert refused(GitHub([GH_SECRET]), b"Hello, World?", headers).reason == "bad_signature"


def test_github_refuses_a_wrong_secret() -> None:
    """The documented signature does not verify under another secret."""
    headers = {"X-Hub-Signature-256": GH_SIGNATURE}
    assert refused(GitHub([GH_OTHER_SECRET]), GH_BODY, headers).reason == "bad_signature"


@pytest.mark.parametrize("signer", [GH_SECRET, GH_OTHER_SECRET], ids=["old", "new"])
def test_github_accepts_old_and_new_secret_during_rotation(signer: str) -> None:
    """With both secrets configured, a delivery signed by either verifies."""
    headers = {"X-Hub-Signature-256": github_signature(signer, GH_BODY)}
    assert GitHub([GH_SECRET, GH_OTHER_SECRET]).verify(GH_BODY, headers, now=0)


def test_github_refuses_a_missing_signature_even_with_the_sha1_one() -> None:
    """Only X-Hub-Signature-256 counts; the legacy SHA-1 header is no fallback."""
    sha1 = "sha1=" + hmac.new(GH_SECRET.encode(), GH_BODY, hashlib.sha1).hexdigest()
    headers = {"X-Hub-Signature": sha1, "X-GitHub-Event": "push"}
    assert refused(GitHub([GH_SECRET]), GH_BODY, headers).reason == "missing_header"


@pytest.mark.parametrize(
    "value",
    [
        GH_HEX,
        "sha1=" + GH_HEX,
        "sha256=" + GH_HEX[:-2],
        "sha256=" + GH_HEX[:-1] + "g",
        "sha256=" + " ".join([GH_HEX[:32], GH_HEX[32:]]),
        "sha256=" + base64.b64encode(bytes.fromhex(GH_HEX)).decode(),
    ],
    ids=["no-prefix", "sha1-prefix", "short", "not-hex", "spaced", "base64"],
)
def test_github_refuses_malformed_signatures(value: str) -> None:
    """The header must be sha256= followed by exactly 64 hex digits."""
    headers = {"X-Hub-Signature-256": value}
    assert refused(GitHub([GH_SECRET]), GH_BODY, headers).reason == "malformed_header"


def test_github_accepts_upper_case_hex() -> None:
    """Hex digits are case-insensitive: the digest is the same bytes."""
    headers = {"X-Hub-Signature-256": "sha256=" + GH_HEX.upper()}
    assert GitHub([GH_SECRET]).verify(GH_BODY, headers, now=0)


# --- Stripe ------------------------------------------------------------------------------


def test_stripe_accepts_a_valid_signature() -> None:
    """A v1 HMAC of "{t}.{body}" under the whole whsec_ secret verifies and reports t."""
    verified = Stripe([STRIPE_SECRET]).verify(STRIPE_BODY, stripe_headers(), now=STRIPE_T)
    assert verified == Verified(event_id=None, event_type=None, timestamp=STRIPE_T)


def test_stripe_keys_with_the_secret_text_not_its_base64_decoding() -> None:
    """Unlike Standard Webhooks, Stripe's whsec_ secret is the key as-is."""
    secret = "whsec_" + base64.b64encode(b"looks like base64 but is not decoded").decode()
    decoded_key = base64.b64decode(secret.removeprefix("whsec_"))
    wrong = hmac_sha256(decoded_key, f"{STRIPE_T}.".encode() + STRIPE_BODY).hex()
    scheme = Stripe([secret])
    assert scheme.verify(STRIPE_BODY, stripe_headers(secret), now=STRIPE_T)
    headers = {"Stripe-Signature": f"t={STRIPE_T},v1={wrong}"}
    assert refused(scheme, STRIPE_BODY, headers, STRIPE_T).reason == "bad_signature"


def test_stripe_refuses_a_tampered_body() -> None:
    """A changed payload does not match the signature."""
    body = STRIPE_BODY.replace(b"invoice.paid", b"invoice.void")
    error = refused(Stripe([STRIPE_SECRET]), body, stripe_headers(), STRIPE_T)
    assert error.reason == "bad_signature"


def test_stripe_refuses_a_replayed_signature_with_a_new_timestamp() -> None:
    """The timestamp is signed, so moving t forward to dodge the window breaks the MAC."""
    old = stripe_v1(STRIPE_SECRET, STRIPE_T - 3600, STRIPE_BODY)
    headers = {"Stripe-Signature": f"t={STRIPE_T},v1={old}"}
    error = refused(Stripe([STRIPE_SECRET]), STRIPE_BODY, headers, STRIPE_T)
    assert error.reason == "bad_signature"


def test_stripe_refuses_a_wrong_secret() -> None:
    """A signature made with another endpoint's secret does not verify."""
    error = refused(Stripe([STRIPE_OTHER_SECRET]), STRIPE_BODY, stripe_headers(), STRIPE_T)
    assert error.reason == "bad_signature"


@pytest.mark.parametrize("signer", [STRIPE_SECRET, STRIPE_OTHER_SECRET], ids=["old", "new"])
def test_stripe_accepts_old_and_new_secret_during_rotation(signer: str) -> None:
    """With both secrets configured, a delivery signed by either verifies."""
    scheme = Stripe([STRIPE_SECRET, STRIPE_OTHER_SECRET])
    assert scheme.verify(STRIPE_BODY, stripe_headers(signer), now=STRIPE_T)


def test_stripe_finds_the_valid_v1_among_several_and_ignores_v0() -> None:
    """During Stripe's own secret roll one of several v1 entries matches; v0 is noise."""
    good = stripe_v1(STRIPE_SECRET, STRIPE_T, STRIPE_BODY)
    other = stripe_v1(STRIPE_OTHER_SECRET, STRIPE_T, STRIPE_BODY)
    header = f"t={STRIPE_T},v1={other},v0={'0' * 64},v1=zz,v1={good}"
    scheme = Stripe([STRIPE_SECRET])
    assert scheme.verify(STRIPE_BODY, {"stripe-signature": header}, now=STRIPE_T)


def test_stripe_does_not_check_v0_signatures() -> None:
    """A correct digest under v0 is not a v1 signature, so the header has nothing to check."""
    good = stripe_v1(STRIPE_SECRET, STRIPE_T, STRIPE_BODY)
    headers = {"Stripe-Signature": f"t={STRIPE_T},v0={good}"}
    error = refused(Stripe([STRIPE_SECRET]), STRIPE_BODY, headers, STRIPE_T)
    assert error.reason == "malformed_header"


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(-301, "stale_timestamp"), (301, "future_timestamp")],
    ids=["stale", "future"],
)
def test_stripe_refuses_timestamps_outside_the_tolerance(offset: int, reason: str) -> None:
    """A correctly signed event more than tolerance_s old or ahead is refused."""
    scheme = Stripe([STRIPE_SECRET], tolerance_s=300)
    headers = stripe_headers(timestamp=STRIPE_T + offset)
    assert refused(scheme, STRIPE_BODY, headers, STRIPE_T).reason == reason


def test_stripe_honours_a_custom_tolerance() -> None:
    """A wider tolerance accepts what the default would call stale."""
    headers = stripe_headers(timestamp=STRIPE_T - 3000)
    assert Stripe([STRIPE_SECRET], tolerance_s=3600).verify(STRIPE_BODY, headers, now=STRIPE_T)
    assert refused(Stripe([STRIPE_SECRET]), STRIPE_BODY, headers, STRIPE_T).reason == (
        "stale_timestamp"
    )


def test_stripe_refuses_a_missing_header() -> None:
    """Without Stripe-Signature there is nothing to verify."""
    error = refused(Stripe([STRIPE_SECRET]), STRIPE_BODY, {"Content-Type": "application/json"})
    assert error.reason == "missing_header"


@pytest.mark.parametrize(
    "header",
    [
        "v1=" + "0" * 64,
        f"t={STRIPE_T},t={STRIPE_T},v1=" + "0" * 64,
        "t=yesterday,v1=" + "0" * 64,
        f"t={STRIPE_T}",
        f"t={STRIPE_T},v0=" + "0" * 64,
        f"t={STRIPE_T},garbage",
    ],
    ids=["no-t", "two-t", "t-not-a-number", "no-v1", "only-v0", "item-without-equals"],
)
def test_stripe_refuses_malformed_headers(header: str) -> None:
    """The header needs exactly one numeric t and at least one v1 entry."""
    headers = {"Stripe-Signature": header}
    error = refused(Stripe([STRIPE_SECRET]), STRIPE_BODY, headers, STRIPE_T)
    assert error.reason == "malformed_header"


# --- Generic HMAC-SHA256 -----------------------------------------------------------------


def test_hmac_sha256_reproduces_githubs_documented_vector() -> None:
    """Configured like GitHub, the generic scheme accepts GitHub's published vector."""
    scheme = HmacSha256([GH_SECRET], header="X-Hub-Signature-256", encoding="hex")
    assert scheme.verify(GH_BODY, {"x-hub-signature-256": GH_SIGNATURE}, now=0) == Verified(
        event_id=None, event_type=None, timestamp=None
    )


@pytest.mark.parametrize(
    ("encoding", "value"),
    [
        ("hex", generic_hex(GENERIC_SECRET, GENERIC_BODY)),
        ("hex", "sha256=" + generic_hex(GENERIC_SECRET, GENERIC_BODY)),
        ("base64", generic_base64(GENERIC_SECRET, GENERIC_BODY)),
        ("base64", "sha256=" + generic_base64(GENERIC_SECRET, GENERIC_BODY)),
        ("auto", generic_hex(GENERIC_SECRET, GENERIC_BODY)),
        ("auto", "SHA256=" + generic_hex(GENERIC_SECRET, GENERIC_BODY).upper()),
        ("auto", generic_base64(GENERIC_SECRET, GENERIC_BODY)),
    ],
    ids=["hex", "hex-prefixed", "b64", "b64-prefixed", "auto-hex", "auto-upper", "auto-b64"],
)
def test_hmac_sha256_accepts_each_encoding(encoding: Any, value: str) -> None:
    """Hex and base64 digests verify, with or without the default sha256= prefix."""
    scheme = HmacSha256([GENERIC_SECRET], header="X-Signature", encoding=encoding)
    assert scheme.verify(GENERIC_BODY, {"x-signature": value}, now=0)


def test_hmac_sha256_strips_a_custom_prefix_and_none_means_none() -> None:
    """A configured prefix is removed; with prefix=None the value must be the bare digest."""
    digest = generic_base64(GENERIC_SECRET, GENERIC_BODY)
    custom = HmacSha256([GENERIC_SECRET], header="Signature", prefix="hmac-sha256 ")
    assert custom.verify(GENERIC_BODY, {"Signature": "hmac-sha256 " + digest}, now=0)
    bare = HmacSha256([GENERIC_SECRET], header="Signature", prefix=None)
    assert bare.verify(GENERIC_BODY, {"Signature": digest}, now=0)
    headers = {"Signature": "sha256=" + digest}
    assert refused(bare, GENERIC_BODY, headers).reason == "malformed_header"


def test_hmac_sha256_refuses_a_tampered_body() -> None:
    """A changed payload does not match the signature."""
    scheme = HmacSha256([GENERIC_SECRET], header="X-Signature")
    headers = {"X-Signature": generic_hex(GENERIC_SECRET, GENERIC_BODY)}
    assert refused(scheme, GENERIC_BODY + b" ", headers).reason == "bad_signature"


def test_hmac_sha256_refuses_a_wrong_secret() -> None:
    """A digest under another secret does not verify."""
    scheme = HmacSha256(["not the generic secret"], header="X-Signature")
    headers = {"X-Signature": generic_hex(GENERIC_SECRET, GENERIC_BODY)}
    assert refused(scheme, GENERIC_BODY, headers).reason == "bad_signature"


@pytest.mark.parametrize("signer", [GENERIC_SECRET, "the new secret"], ids=["old", "new"])
def test_hmac_sha256_accepts_old_and_new_secret_during_rotation(signer: str) -> None:
    """With both secrets configured, a delivery signed by either verifies."""
    scheme = HmacSha256([GENERIC_SECRET, "the new secret"], header="X-Signature")
    headers = {"X-Signature": generic_base64(signer, GENERIC_BODY)}
    assert scheme.verify(GENERIC_BODY, headers, now=0)


def test_hmac_sha256_refuses_a_missing_header() -> None:
    """The configured header is required; a different one does not count."""
    scheme = HmacSha256([GENERIC_SECRET], header="X-Signature")
    headers = {"X-Other-Signature": generic_hex(GENERIC_SECRET, GENERIC_BODY)}
    assert refused(scheme, GENERIC_BODY, headers).reason == "missing_header"


@pytest.mark.parametrize(
    ("encoding", "value"),
    [
        ("hex", generic_base64(GENERIC_SECRET, GENERIC_BODY)),
        ("hex", generic_hex(GENERIC_SECRET, GENERIC_BODY)[:-2]),
        ("base64", "not base64 at all!"),
        ("auto", "sha256=zzzz"),
        ("auto", "sha256="),
    ],
    ids=["b64-for-hex", "short-hex", "junk-b64", "junk-auto", "prefix-only"],
)
def test_hmac_sha256_refuses_malformed_digests(encoding: Any, value: str) -> None:
    """A value that is not a digest in the configured encoding is malformed."""
    scheme = HmacSha256([GENERIC_SECRET], header="X-Signature", encoding=encoding)
    assert refused(scheme, GENERIC_BODY, {"X-Signature": value}).reason == "malformed_header"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"header": ""}, "header"),
        ({"header": "X-Signature", "encoding": "base32"}, "encoding"),
    ],
)
def test_hmac_sha256_refuses_bad_configuration(kwargs: dict[str, Any], message: str) -> None:
    """An empty header name or an unknown encoding fails at start-up."""
    with pytest.raises(ValueError, match=message):
        HmacSha256([GENERIC_SECRET], **kwargs)


# --- Microsoft Teams outgoing webhooks ---------------------------------------------------


def test_teams_accepts_a_valid_hmac() -> None:
    """An HMAC keyed by the decoded security token verifies; nothing is learned from headers."""
    headers = {"Authorization": teams_authorization(TEAMS_TOKEN, TEAMS_BODY)}
    verified = TeamsOutgoing([TEAMS_TOKEN]).verify(TEAMS_BODY, headers, now=0)
    assert verified == Verified(event_id=None, event_type=None, timestamp=None)


def test_teams_keys_with_the_decoded_token_not_its_text() -> None:
    """Keying with the token's base64 text instead of its bytes does not verify."""
    mac = hmac_sha256(TEAMS_TOKEN.encode(), TEAMS_BODY)
    headers = {"Authorization": "HMAC " + base64.b64encode(mac).decode()}
    assert refused(TeamsOutgoing([TEAMS_TOKEN]), TEAMS_BODY, headers).reason == "bad_signature"


def test_teams_refuses_a_tampered_body() -> None:
    """A changed message does not match the HMAC."""
    headers = {"authorization": teams_authorization(TEAMS_TOKEN, TEAMS_BODY)}
    body = TEAMS_BODY.replace(b"nightly", b"hourly")
    assert refused(TeamsOutgoing([TEAMS_TOKEN]), body, headers).reason == "bad_signature"


def test_teams_refuses_a_wrong_token() -> None:
    """An HMAC made with another webhook's token does not verify."""
    headers = {"Authorization": teams_authorization(TEAMS_OTHER_TOKEN, TEAMS_BODY)}
    assert refused(TeamsOutgoing([TEAMS_TOKEN]), TEAMS_BODY, headers).reason == "bad_signature"


@pytest.mark.parametrize("signer", [TEAMS_TOKEN, TEAMS_OTHER_TOKEN], ids=["old", "new"])
def test_teams_accepts_old_and_new_token_during_rotation(signer: str) -> None:
    """With both tokens configured, a message signed by either verifies."""
    headers = {"AUTHORIZATION": teams_authorization(signer, TEAMS_BODY)}
    assert TeamsOutgoing([TEAMS_TOKEN, TEAMS_OTHER_TOKEN]).verify(TEAMS_BODY, headers, now=0)


def test_teams_refuses_a_missing_authorization() -> None:
    """Without Authorization there is nothing to verify."""
    assert refused(TeamsOutgoing([TEAMS_TOKEN]), TEAMS_BODY, {}).reason == "missing_header"


@pytest.mark.parametrize(
    "value",
    [
        "Bearer " + teams_authorization(TEAMS_TOKEN, TEAMS_BODY).removeprefix("HMAC "),
        teams_authorization(TEAMS_TOKEN, TEAMS_BODY).removeprefix("HMAC "),
        "HMAC",
        "HMAC not*base64",
        "HMAC " + base64.b64encode(b"sixteen byte mac").decode(),
    ],
    ids=["bearer", "no-scheme", "scheme-only", "not-base64", "wrong-length"],
)
def test_teams_refuses_malformed_authorization(value: str) -> None:
    """Authorization must be the HMAC scheme followed by a base64 digest."""
    headers = {"Authorization": value}
    assert refused(TeamsOutgoing([TEAMS_TOKEN]), TEAMS_BODY, headers).reason == ("malformed_header")


def test_teams_refuses_a_token_that_is_not_base64() -> None:
    """A security token that cannot be decoded fails at start-up, without echoing it."""
    with pytest.raises(ValueError, match="not valid base64") as caught:
        TeamsOutgoing(["this is no token!"])
    assert "this is no token!" not in str(caught.value)


# --- Microsoft Graph change notifications ------------------------------------------------


def test_graph_accepts_matching_client_states() -> None:
    """A batch whose every clientState is configured is authentic."""
    scheme = GraphClientState([GRAPH_STATE])
    verified = scheme.verify(graph_body(GRAPH_STATE, GRAPH_STATE), {}, now=0)
    assert verified == Verified(event_id=None, event_type=None, timestamp=None)


def test_graph_accepts_old_and_new_client_states_during_rotation() -> None:
    """With both values configured, notifications carrying either verify, even mixed."""
    scheme = GraphClientState([GRAPH_STATE, GRAPH_OTHER_STATE])
    assert scheme.verify(graph_body(GRAPH_STATE), {}, now=0)
    assert scheme.verify(graph_body(GRAPH_OTHER_STATE), {}, now=0)
    assert scheme.verify(graph_body(GRAPH_STATE, GRAPH_OTHER_STATE), {}, now=0)


def test_graph_refuses_a_batch_with_one_forged_notification() -> None:
    """One wrong clientState among genuine ones rejects the whole delivery."""
    body = graph_body(GRAPH_STATE, "guessedClientValue", GRAPH_STATE)
    error = refused(GraphClientState([GRAPH_STATE]), body, {})
    assert error.reason == "bad_client_state"
    assert "notification 2" in error.message


def test_graph_refuses_a_wrong_client_state() -> None:
    """A clientState from another subscription is refused."""
    error = refused(GraphClientState([GRAPH_OTHER_STATE]), graph_body(GRAPH_STATE), {})
    assert error.reason == "bad_client_state"


def test_graph_compares_client_states_exactly() -> None:
    """Case, prefixes and surrounding spaces are not forgiven."""
    scheme = GraphClientState([GRAPH_STATE])
    for near_miss in (GRAPH_STATE.lower(), GRAPH_STATE + " ", GRAPH_STATE[:-1]):
        assert refused(scheme, graph_body(near_miss), {}).reason == "bad_client_state"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[]",
        b'{"value": []}',
        b'{"value": {"clientState": "secretClientValue"}}',
        b'{"value": ["secretClientValue"]}',
        b'{"clientState": "secretClientValue"}',
        graph_body(None),
        graph_body(GRAPH_STATE, None),
        b'{"value": [{"clientState": 1}]}',
        b'{"value": [{"clientState": ""}]}',
        b"[" * 100_000,
    ],
    ids=[
        "empty",
        "not-json",
        "not-utf8",
        "array",
        "no-notifications",
        "value-not-list",
        "item-not-object",
        "no-value",
        "no-client-state",
        "one-without-client-state",
        "client-state-not-string",
        "client-state-empty",
        "deeply-nested",
    ],
)
def test_graph_refuses_bodies_without_checkable_client_states(body: bytes) -> None:
    """Anything but a non-empty value list whose items all carry a clientState is refused."""
    assert refused(GraphClientState([GRAPH_STATE]), body, {}).reason == "bad_client_state"


def test_graph_with_a_tampered_body_still_needs_the_client_state() -> None:
    """Graph signs nothing, so a changed resource passes only with the secret echoed back."""
    body = graph_body(GRAPH_STATE).replace(b"created", b"deleted")
    assert GraphClientState([GRAPH_STATE]).verify(body, {}, now=0)
    forged = graph_body("attacker").replace(b"created", b"deleted")
    assert refused(GraphClientState([GRAPH_STATE]), forged, {}).reason == "bad_client_state"


# --- No verification ---------------------------------------------------------------------


def test_no_verification_accepts_anything() -> None:
    """The explicit opt-out accepts any body and headers and learns nothing from them."""
    verified = NoVerification().verify(b"\x00anything", {"X-Whatever": "1"}, now=0)
    assert verified == Verified(event_id=None, event_type=None, timestamp=None)


# --- Secrets and signatures never leak ---------------------------------------------------


def _leak_cases() -> list[tuple[Scheme, bytes, dict[str, str], float, list[str]]]:
    """Failing requests, each with every string its error must not contain."""
    sw_expected = standard_signature(SW_SECRET, SW_ID, SW_TIMESTAMP, b"tampered")
    sw_stale = standard_signature(SW_SECRET, SW_ID, SW_TIMESTAMP - 999, SW_BODY)
    gh_received = github_signature(GH_OTHER_SECRET, GH_BODY)
    stripe_received = stripe_v1(STRIPE_OTHER_SECRET, STRIPE_T, STRIPE_BODY)
    generic_received = generic_hex("other", GENERIC_BODY)
    teams_received = teams_authorization(TEAMS_OTHER_TOKEN, TEAMS_BODY)
    sw_secrets = [SW_SECRET, SW_BARE_SECRET]
    return [
        (
            StandardWebhooks([SW_SECRET]),
            b"tampered",
            standard_headers(),
            SW_TIMESTAMP,
            [*sw_secrets, SW_SIGNATURE, SW_SIGNATURE[3:], sw_expected, sw_expected[3:]],
        ),
        (
            StandardWebhooks([SW_SECRET]),
            SW_BODY,
            standard_headers(sw_stale, SW_TIMESTAMP - 999),
            SW_TIMESTAMP,
            [*sw_secrets, sw_stale, sw_stale[3:]],
        ),
        (
            StandardWebhooks([SW_SECRET]),
            SW_BODY,
            standard_headers("v2," + SW_SIGNATURE[3:]),
            SW_TIMESTAMP,
            [*sw_secrets, SW_SIGNATURE[3:]],
        ),
        (
            GitHub([GH_SECRET]),
            GH_BODY,
            {"X-Hub-Signature-256": gh_received},
            0,
            [GH_SECRET, GH_SIGNATURE, GH_HEX, gh_received, gh_received[7:]],
        ),
        (
            GitHub([GH_SECRET]),
            GH_BODY,
            {"X-Hub-Signature-256": GH_HEX},
            0,
            [GH_SECRET, GH_HEX],
        ),
        (
            Stripe([STRIPE_SECRET]),
            STRIPE_BODY,
            {"Stripe-Signature": f"t={STRIPE_T},v1={stripe_received}"},
            STRIPE_T,
            [STRIPE_SECRET, stripe_received, stripe_v1(STRIPE_SECRET, STRIPE_T, STRIPE_BODY)],
        ),
        (
            Stripe([STRIPE_SECRET]),
            STRIPE_BODY,
            stripe_headers(timestamp=STRIPE_T + 999),
            STRIPE_T,
            [STRIPE_SECRET, stripe_v1(STRIPE_SECRET, STRIPE_T + 999, STRIPE_BODY)],
        ),
        (
            HmacSha256([GENERIC_SECRET], header="X-Signature"),
            GENERIC_BODY,
            {"X-Signature": generic_received},
            0,
            [GENERIC_SECRET, generic_received, generic_hex(GENERIC_SECRET, GENERIC_BODY)],
        ),
        (
            HmacSha256([GENERIC_SECRET], header="X-Signature", encoding="hex"),
            GENERIC_BODY,
            {"X-Signature": generic_base64(GENERIC_SECRET, GENERIC_BODY)},
            0,
            [GENERIC_SECRET, generic_base64(GENERIC_SECRET, GENERIC_BODY)],
        ),
        (
            TeamsOutgoing([TEAMS_TOKEN]),
            TEAMS_BODY,
            {"Authorization": teams_received},
            0,
            [TEAMS_TOKEN, teams_received[5:], teams_authorization(TEAMS_TOKEN, TEAMS_BODY)[5:]],
        ),
        (
            GraphClientState([GRAPH_STATE]),
            graph_body(GRAPH_STATE, "guessedClientValue"),
            {},
            0,
            [GRAPH_STATE, "guessedClientValue"],
        ),
    ]


@pytest.mark.parametrize(
    ("scheme", "body", "headers", "now", "forbidden"),
    _leak_cases(),
    ids=[
        "standard-bad-signature",
        "standard-stale",
        "standard-malformed",
        "github-bad-signature",
        "github-malformed",
        "stripe-bad-signature",
        "stripe-future",
        "hmac-bad-signature",
        "hmac-malformed",
        "teams-bad-signature",
        "graph-bad-client-state",
    ],
)
def test_errors_never_contain_secrets_or_signatures(
    scheme: Scheme, body: bytes, headers: dict[str, str], now: float, forbidden: list[str]
) -> None:
    """Neither the message, str() nor repr() of a failure echoes a secret or a signature."""
    error = refused(scheme, body, headers, now)
    for text in (error.message, str(error), repr(error), repr(error.args)):
        for secret_or_signature in forbidden:
            assert secret_or_signature not in text


# --- Construction and build_scheme -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "kind"),
    [
        ("standard", {"secrets": [SW_SECRET]}, StandardWebhooks),
        ("github", {"secrets": [GH_SECRET]}, GitHub),
        ("stripe", {"secrets": [STRIPE_SECRET]}, Stripe),
        ("hmac-sha256", {"secrets": [GENERIC_SECRET], "header": "X-Signature"}, HmacSha256),
        ("teams", {"secrets": [TEAMS_TOKEN]}, TeamsOutgoing),
        ("graph", {"secrets": [GRAPH_STATE]}, GraphClientState),
        ("none", {"secrets": []}, NoVerification),
    ],
)
def test_build_scheme_knows_every_name(name: str, options: dict[str, Any], kind: type) -> None:
    """Each configured name builds its scheme, whose name round-trips."""
    scheme = build_scheme(name, **options)
    assert isinstance(scheme, kind)
    assert scheme.name == name


def test_build_scheme_ignores_case_and_surrounding_spaces() -> None:
    """Scheme names from configuration files are matched leniently."""
    assert isinstance(build_scheme(" GitHub ", secrets=[GH_SECRET]), GitHub)


def test_build_scheme_passes_tolerance_to_timed_schemes() -> None:
    """tolerance_s reaches Standard Webhooks and Stripe."""
    standard = build_scheme("standard", secrets=[SW_SECRET], tolerance_s=60)
    assert refused(standard, SW_BODY, standard_headers(), SW_TIMESTAMP + 61).reason == (
        "stale_timestamp"
    )
    stripe = build_scheme("stripe", secrets=[STRIPE_SECRET], tolerance_s=60)
    assert refused(stripe, STRIPE_BODY, stripe_headers(), STRIPE_T - 61).reason == (
        "future_timestamp"
    )


def test_build_scheme_passes_header_and_encoding_to_hmac_sha256() -> None:
    """header and encoding configure the generic scheme."""
    scheme = build_scheme(
        "hmac-sha256", secrets=[GENERIC_SECRET], header="X-Sig", encoding="base64"
    )
    headers = {"x-sig": generic_base64(GENERIC_SECRET, GENERIC_BODY)}
    assert scheme.verify(GENERIC_BODY, headers, now=0)
    hex_headers = {"x-sig": generic_hex(GENERIC_SECRET, GENERIC_BODY)}
    assert refused(scheme, GENERIC_BODY, hex_headers).reason == "malformed_header"


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("gitlab", {"secrets": ["x"]}, r"unknown webhook verification scheme 'gitlab'.*github"),
        ("", {"secrets": ["x"]}, "unknown webhook verification scheme"),
        ("hmac-sha256", {"secrets": ["x"]}, "needs the header option"),
        ("hmac-sha256", {"secrets": ["x"], "header": "X-S", "encoding": "b64"}, "encoding"),
        ("github", {"secrets": []}, "at least one secret"),
        ("graph", {"secrets": "secretClientValue"}, "list of strings"),
        ("stripe", {"secrets": [STRIPE_SECRET, ""]}, r"secret #2 .* non-empty"),
        ("standard", {"secrets": [SW_SECRET], "tolerance_s": 0}, "tolerance_s"),
        ("stripe", {"secrets": [STRIPE_SECRET], "tolerance_s": -5}, "tolerance_s"),
        ("standard", {"secrets": ["whsec_!!"]}, "not valid base64"),
        ("teams", {"secrets": ["not a token"]}, "not valid base64"),
    ],
    ids=[
        "unknown",
        "empty-name",
        "hmac-without-header",
        "hmac-bad-encoding",
        "no-secrets",
        "bare-string-secrets",
        "blank-secret",
        "zero-tolerance",
        "negative-tolerance",
        "standard-bad-secret",
        "teams-bad-token",
    ],
)
def test_build_scheme_refuses_bad_configuration(
    name: str, options: dict[str, Any], message: str
) -> None:
    """Unknown names and missing or invalid options fail with a message naming the fix."""
    with pytest.raises(ValueError, match=message):
        build_scheme(name, **options)


def test_verification_error_carries_reason_and_message() -> None:
    """The reason is for code, the message for logs, and str() is the message."""
    error = VerificationError("bad_signature", "X-Signature does not match")
    assert error.reason == "bad_signature"
    assert error.message == "X-Signature does not match"
    assert str(error) == "X-Signature does not match"
