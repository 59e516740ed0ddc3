"""schemathesis hooks for sluice's API conformance run (tests/api/conformance.sh).

The document describes an NDJSON body (application/x-ndjson) by the schema of its lines as the
items of an array; this serializer writes such an array as one JSON text per line.
"""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, list):
        return "".join(json.dumps(v) + "\n" for v in value).encode()
    return json.dumps(value).encode()
