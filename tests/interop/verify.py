"""Verifies keyturn tokens with PyJWT's PyJWKClient, the way a resource server would.

Usage: python verify.py <jwks-url> <issuer> <audience> <max-age-seconds>
Reads "<id> <token>" lines on stdin, writes "<id> ok <kid>" or "<id> fail <reason>".
"""
import sys

import jwt

url, issuer, audience, max_age = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=max_age)
ALGS = ["ES256", "ES384", "EdDSA", "RS256", "PS256"]

for line in sys.stdin:
    ident, token = line.split()
    try:
        key = client.get_signing_key_from_jwt(token)
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            raise ValueError("typ")
        jwt.decode(token, key=key, algorithms=ALGS, audience=audience, issuer=issuer)
        print(f"{ident} ok {header.get('kid')}", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is a result to report
        print(f"{ident} fail {type(e).__name__}", flush=True)
