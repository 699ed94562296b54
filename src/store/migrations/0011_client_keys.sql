-- A client that authenticates with private_key_jwt (RFC 7523 §2.2) instead of a secret: its
-- public keys, either held here as a JWKS (JSON text) or fetched from the URL where the
-- client publishes them. Such a client has no secret (secret_hash is empty).
ALTER TABLE clients ADD COLUMN jwks TEXT;
ALTER TABLE clients ADD COLUMN jwks_uri TEXT;
