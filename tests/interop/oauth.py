"""Python's authlib against keyturn: validates both discovery documents with authlib's own
validators, then runs the client_credentials grant with OAuth2Session, introspects and
revokes the token with it. Usage: python oauth.py <issuer> <client_id> <client_secret> <scope>
Prints one JSON object with what each step returned."""
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata

issuer, client_id, client_secret, scope = sys.argv[1:5]
out = {}
rfc8414 = requests.get(issuer + "/.well-known/oauth-authorization-server", timeout=5).json()
AuthorizationServerMetadata(rfc8414).validate()
out["rfc8414_valid"] = True
oidc = requests.get(issuer + "/.well-known/openid-configuration", timeout=5).json()
try:
    OpenIDProviderMetadata(oidc).validate()
    out["openid_provider_valid"] = True
except ValueError as e:
    out["openid_provider_valid"] = False
    out["openid_provider_error"] = str(e)

session = OAuth2Session(client_id, client_secret, scope=scope)
token = session.fetch_token(rfc8414["token_endpoint"], grant_type="client_credentials")
out["token"] = {k: token.get(k) for k in ("access_token", "token_type", "scope", "expires_in")}
out["introspected"] = session.introspect_token(rfc8414["introspection_endpoint"], token=token["access_token"]).json()
revoked = session.revoke_token(rfc8414["revocation_endpoint"], token=token["access_token"])
out["revoke_status"] = revoked.status_code
out["after_revocation"] = session.introspect_token(rfc8414["introspection_endpoint"], token=token["access_token"]).json()
print(json.dumps(out))
