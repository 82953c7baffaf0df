-- Media a custom messaging client uploads (`POST /nexus/v3/channels/{id}/media`) to use in
-- its users' messages: stored here, with the tenant and channel it came through, and referred
-- to by id (`nexus://media/<id>`). Agents of the tenant download it through the Workspace API.

CREATE TABLE media (
    id          UUID        PRIMARY KEY,
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel_id  UUID        NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    filename    TEXT        NOT NULL CHECK (length(filename) BETWEEN 1 AND 255),
    mimetype    TEXT        NOT NULL CHECK (length(mimetype) BETWEEN 3 AND 127),
    length      INTEGER     NOT NULL CHECK (length >= 0),
    -- Hex SHA-256 of the content, for integrity checks and for clients that compare.
    sha256      TEXT        NOT NULL,
    content     BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX media_by_tenant ON media (tenant_id, created_at);

CREATE FUNCTION nexus_media_json(m media) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'mediaId', m.id,
        'url', 'nexus://media/' || m.id,
        'filename', m.filename,
        'mimetype', m.mimetype,
        'length', m.length,
        'sha256', m.sha256,
        'createdAt', nexus_ts(m.created_at))
$$;
