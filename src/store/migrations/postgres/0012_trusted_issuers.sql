-- Workload identity federation: issuers whose tokens a workload may exchange for a
-- keyturn access token (a Kubernetes cluster's service-account issuer, a CI system's OIDC
-- issuer), with where their public keys are and the audience their tokens must name.
CREATE TABLE trusted_issuers (
    issuer      TEXT PRIMARY KEY,
    jwks_uri    TEXT NOT NULL,
    audience    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);

-- Which subject of a trusted issuer acts as which client: a token of (issuer, subject) gets
-- an access token for client_id, with that client's scopes, audiences and lifetime.
CREATE TABLE federated_subjects (
    issuer      TEXT NOT NULL REFERENCES trusted_issuers (issuer),
    subject     TEXT NOT NULL,
    client_id   TEXT NOT NULL REFERENCES clients (client_id),
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);

-- Every node holds the trusted issuers and their subjects in memory: a change is announced.
CREATE TRIGGER trusted_issuers_changed AFTER INSERT OR UPDATE OR DELETE ON trusted_issuers
    FOR EACH STATEMENT EXECUTE FUNCTION keyturn_changed();
CREATE TRIGGER federated_subjects_changed AFTER INSERT OR UPDATE OR DELETE ON federated_subjects
    FOR EACH STATEMENT EXECUTE FUNCTION keyturn_changed();
