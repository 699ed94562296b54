-- Failed dashboard sign-ins per source address and per account, for the sign-in limiter.

CREATE TABLE sign_in_failures (
    key  TEXT NOT NULL,
    at   BIGINT NOT NULL
);
CREATE INDEX sign_in_failures_key_at ON sign_in_failures (key, at);
CREATE INDEX sign_in_failures_at ON sign_in_failures (at);
