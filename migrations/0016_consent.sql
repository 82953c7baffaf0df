-- Consent: the addresses a tenant may not send campaign messages to.
--
-- A suppression names a phone number (E.164) or an email address (lower case) and holds for
-- every sender of the tenant, or for one channel (`channel_id`), until it is deleted or until
-- `expires_at`. `source` says who made it: `keyword` (the texter sent STOP; START lifts these and
-- only these), `api` or `import` (the tenant's own list).
CREATE TABLE suppressions (
    id          BIGSERIAL   PRIMARY KEY,
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address     TEXT        NOT NULL CHECK (length(address) BETWEEN 3 AND 320),
    channel_id  UUID        REFERENCES channels (id) ON DELETE CASCADE,
    reason      TEXT        NOT NULL CHECK (length(reason) <= 500),
    source      TEXT        NOT NULL CHECK (source IN ('keyword', 'api', 'import')),
    expires_at  TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One per address and scope (the nil UUID standing for the whole tenant).
CREATE UNIQUE INDEX suppressions_scope ON suppressions
    (tenant_id, address, coalesce(channel_id, '00000000-0000-0000-0000-000000000000'::uuid));

-- Whether `p_address` may not be sent to from channel `p_channel`: a suppression of the whole
-- tenant, or of that channel, that has not expired.
CREATE FUNCTION nexus_suppressed(p_tenant BIGINT, p_address TEXT, p_channel UUID)
RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM suppressions
         WHERE tenant_id = p_tenant AND address = p_address
           AND (channel_id IS NULL OR channel_id = p_channel)
           AND (expires_at IS NULL OR expires_at > now()))
$$;

-- The outbound API (`/nexus/v3/outbound/...`: suppressions now, campaigns later) has keys of
-- its own, for the tenant's campaign tool.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_permission_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_permission_check
    CHECK (permission IN ('chat', 'securemail', 'history', 'outbound'));

-- A suppression as the API shows it.
CREATE FUNCTION nexus_suppression_json(s suppressions) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', s.id::text,
        'address', s.address,
        'channelId', s.channel_id,
        'reason', s.reason,
        'source', s.source,
        'expiresAt', nexus_ts(s.expires_at),
        'active', s.expires_at IS NULL OR s.expires_at > now(),
        'createdAt', nexus_ts(s.created_at))
$$;
