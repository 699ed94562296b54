"""Python's authlib as a client without a secret, as its documentation shows
private_key_jwt (RFC 7523): an RSA key whose PEM stands where a secret would, in an
OAuth2Session with token_endpoint_auth_method=PrivateKeyJWT(token_endpoint) (and
revocation_endpoint_auth_method, which authlib sets apart); the
client_credentials grant, introspection and revocation. The service registers itself first
with its public key through keyturn's Admin API (cryptography makes the key).
Usage: python secretless.py <issuer> <admin API key>
Prints one JSON object with what each step returned."""
import base64
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

issuer, admin_key = sys.argv[1:3]
meta = requests.get(issuer + "/.well-known/oauth-authorization-server", timeout=5).json()
out = {"advertised": "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]}

private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
numbers = private.public_key().public_numbers()
b64 = lambda n: base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
jwk = {"kty": "RSA", "n": b64(numbers.n), "e": b64(numbers.e), "alg": "RS256", "use": "sig"}
registered = requests.post(
    issuer + "/api/v1/clients",
    headers={"Authorization": "Bearer " + admin_key},
    json={"name": "reports", "audiences": ["orders-api"], "scopes": ["orders:read"], "jwks": {"keys": [jwk]}},
    timeout=5,
)
registered.raise_for_status()
client_id = registered.json()["client_id"]
out["client_id"] = client_id
pem = private.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()

token_endpoint = meta["token_endpoint"]
session = OAuth2Session(
    client_id,
    pem,
    token_endpoint_auth_method=PrivateKeyJWT(token_endpoint),
    revocation_endpoint_auth_method=PrivateKeyJWT(meta["revocation_endpoint"]),
    scope="orders:read",
)
token = session.fetch_token(token_endpoint, grant_type="client_credentials")
out["token"] = {k: token.get(k) for k in ("token_type", "scope")}
out["introspected"] = session.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
out["revoke_status"] = session.revoke_token(meta["revocation_endpoint"], token=token["access_token"]).status_code
out["after_revocation"] = session.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
print(json.dumps(out))
