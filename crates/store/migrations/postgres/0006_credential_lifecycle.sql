-- Ending a user's access (`bourse user disable|enable|password|revoke-keys`). A login token
-- carries its user's token_version and ends when that changes (disable, password change). Every
-- change is also a row of credential_changes: each API replica reads the rows it has not seen
-- (woken by NOTIFY bourse_credentials, and once a second in any case) and forgets that user's
-- cached credentials. No foreign key: the trail is kept for users that no longer exist too.
ALTER TABLE users ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE credential_changes (
    seq        BIGSERIAL PRIMARY KEY,
    user_id    UUID NOT NULL,
    action     TEXT NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
