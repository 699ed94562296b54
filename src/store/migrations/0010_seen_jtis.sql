-- The one replay cache of the installation: the jti of every DPoP proof (and, later, client
-- assertion) accepted, keyed by the key that signed it (its RFC 7638 thumbprint), kept until
-- the proof could no longer be accepted anyway, then pruned. In the database, so a proof
-- accepted by one node is refused by every other.
CREATE TABLE seen_jtis (
    key         TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (key, jti)
);
CREATE INDEX seen_jtis_expiry ON seen_jtis (expires_at);

-- A refresh token of a public holder (redeemed without client authentication) that was
-- issued in answer to a DPoP proof is bound to the proof's key (its thumbprint): redeeming
-- it takes a proof of the same key.
ALTER TABLE refresh_tokens ADD COLUMN jkt TEXT;

-- A client that must present a DPoP proof with every token request (1), or may (0).
ALTER TABLE clients ADD COLUMN dpop_required INTEGER NOT NULL DEFAULT 0;
