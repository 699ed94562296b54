-- Sessions: a refresh family is a session, the `sid` of every access token minted in it.
-- The app that minted it (its issuer API key, or its client) owns it: it alone (or an
-- administrator) lists and ends it. `ttl` is the access-token lifetime first asked for, kept
-- for every refresh; `ends_at` the absolute end; the idle end is the refresh token's expiry.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    sub           TEXT NOT NULL,
    owner         TEXT NOT NULL,
    minted_by     TEXT NOT NULL,
    label         TEXT,
    ttl           BIGINT,
    started_at    BIGINT NOT NULL,
    refreshed_at  BIGINT NOT NULL,
    ends_at       BIGINT NOT NULL,
    ended_at      BIGINT,
    end_reason    TEXT,
    ended_by      TEXT
);
CREATE INDEX sessions_sub ON sessions (sub, started_at);
CREATE INDEX sessions_ends ON sessions (ends_at);

-- Revocations gain the kind `sid` (a session ended).
ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check;
ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check
    CHECK (kind IN ('jti', 'sub', 'client_id', 'kid', 'sid'));

-- When each API key last authenticated a request (noted at most once a minute per node).
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
