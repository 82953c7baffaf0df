-- The message templates of a tenant's outbound campaigns (`/nexus/v3/outbound/templates`): a
-- body (and for email a subject) with `{{variable}}` placeholders, checked by the outbound
-- component when saved (`nexus_guest::template`).
CREATE TABLE outbound_templates (
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    channel     TEXT        NOT NULL CHECK (channel IN ('sms', 'email')),
    subject     TEXT        CHECK (subject IS NULL OR channel = 'email'),
    body        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
