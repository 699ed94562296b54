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
    ttl           INTEGER,
    started_at    INTEGER NOT NULL,
    refreshed_at  INTEGER NOT NULL,
    ends_at       INTEGER NOT NULL,
    ended_at      INTEGER,
    end_reason    TEXT,
    ended_by      TEXT
);
CREATE INDEX sessions_sub ON sessions (sub, started_at);
CREATE INDEX sessions_ends ON sessions (ends_at);

-- Revocations gain the kind `sid` (a session ended): SQLite changes a CHECK by rebuilding.
CREATE TABLE revocations_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL CHECK (kind IN ('jti', 'sub', 'client_id', 'kid', 'sid')),
    value         TEXT NOT NULL,
    cutoff        INTEGER NOT NULL,
    covers_until  INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);
INSERT INTO revocations_new (id, kind, value, cutoff, covers_until, reason, created_at, created_by)
    SELECT id, kind, value, cutoff, covers_until, reason, created_at, created_by FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_new RENAME TO revocations;
CREATE INDEX revocations_covers_until ON revocations (covers_until);

-- When each API key last authenticated a request (noted at most once a minute per node).
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
