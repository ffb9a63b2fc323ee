"""Schemathesis hooks of tests/fuzz_openapi.rs (ADR 0026).

Nova's OpenAPI document names the values only the server hands out with a `format` of their
own: list cursors (`nova-cursor`, `nova-search-cursor`, `nova-live-cursor`) and
`X-Nova-Min-Position` (`nova-position`). Their text is fixed (see `nova_queries::cursor`,
`nova_queries::search::SearchCursor`, `nova_queries::stream::LiveCursor`), so a generator can
make well-formed ones: any well-formed cursor is a position in its list, and position 0 of a
domain is always reached. Without these, every valid-by-the-document request would carry a
random string the server must refuse. Negative generation still sends malformed values.
"""

import struct

import schemathesis
from hypothesis import strategies as st

DOMAINS = ["user", "follow", "post", "experiment", "stream", "conversation"]

uuids = st.uuids().map(str)
# The read models' canonical timestamp text: microseconds, UTC, `Z`.
instants = st.datetimes(
    min_value=__import__("datetime").datetime(2000, 1, 1),
    max_value=__import__("datetime").datetime(2100, 1, 1),
).map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def hexed(text: str) -> str:
    return text.encode().hex()


finite_f32_bits = st.floats(width=32, allow_nan=False, allow_infinity=False).map(
    lambda f: struct.unpack("<I", struct.pack("<f", f))[0]
)

schemathesis.openapi.format(
    "nova-cursor", st.tuples(instants, uuids).map(lambda p: hexed(f"{p[0]}|{p[1]}"))
)
schemathesis.openapi.format(
    "nova-search-cursor",
    st.tuples(
        st.integers(0, 2**32 - 1),
        finite_f32_bits,
        st.integers(-(2**63), 2**63 - 1),
        uuids,
    ).map(lambda p: hexed(f"s1|{p[0]}|{p[1]}|{p[2]}|{p[3]}")),
)
schemathesis.openapi.format(
    "nova-live-cursor",
    st.tuples(st.integers(0, 2**63 - 1), uuids).map(lambda p: hexed(f"live|{p[0]}|{p[1]}")),
)
schemathesis.openapi.format(
    "nova-position", st.sampled_from(DOMAINS).map(lambda d: f"{d}:0")
)


_IDEMPOTENCY_KEY = __import__("re").compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def map_headers(context, headers):
    """A valid `Idempotency-Key` made unique: generated keys repeat ("0", "00" …), and a key
    reused with another request is answered 422 before the command runs, so most commands
    would never be reached. Malformed keys (negative cases) are sent as generated; reuse itself
    is tested in tests/identity.rs and tests/social_graph.rs."""
    if headers:
        for name, value in list(headers.items()):
            if (
                name.lower() == "idempotency-key"
                and isinstance(value, str)
                and _IDEMPOTENCY_KEY.match(value)
            ):
                headers[name] = __import__("uuid").uuid4().hex
    return headers
