-- The conversations core: tenants and their credentials, channels, contacts, interactions and
-- their ordered messages, and an audit of every provisioning change. PostgreSQL is the source of
-- truth; Redis only holds the live state of open chats, rebuilt from these tables when lost.
--
-- Every row carries its tenant, and every query of the components names it.

CREATE TABLE tenants (
    id           BIGSERIAL PRIMARY KEY,
    -- The contact-center id, as the original product keys tenants (`x-ccid`).
    ccid         TEXT        NOT NULL UNIQUE CHECK (ccid ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    name         TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    enabled      BOOLEAN     NOT NULL DEFAULT true,
    -- Signs the HS256 client tokens of this tenant's chat sessions; per tenant, so that one
    -- tenant's leaked secret forges nothing of another's.
    token_secret TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Fixed at creation, as in the original product.
    permission  TEXT        NOT NULL CHECK (permission IN ('chat', 'securemail', 'history')),
    -- SHA-256 of the key: keys are 256 random bits, so a fast hash is enough and the key itself
    -- is never stored.
    key_hash    BYTEA       NOT NULL UNIQUE,
    -- The first characters of the key, for people to tell keys apart.
    key_prefix  TEXT        NOT NULL,
    enabled     BOOLEAN     NOT NULL DEFAULT true,
    expires_at  TIMESTAMPTZ,
    copied_from UUID REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE channels (
    id                         UUID PRIMARY KEY,
    tenant_id                  BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type                       TEXT        NOT NULL CHECK (type IN ('chat', 'messaging', 'sms', 'email', 'securemail')),
    -- For chat, the routing endpoint a widget names in `data[endpoint]`.
    name                       TEXT        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    enabled                    BOOLEAN     NOT NULL DEFAULT true,
    -- Signs and verifies what the channel's far side sends and receives (X-Hub-Signature).
    secret                     TEXT        NOT NULL,
    -- After a rotation the previous secret stays valid until this time, so the far side can
    -- switch without a window of refused requests.
    previous_secret            TEXT,
    previous_secret_expires_at TIMESTAMPTZ,
    settings                   JSONB       NOT NULL DEFAULT '{}',
    created_at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE contacts (
    id          UUID PRIMARY KEY,
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    first_name  TEXT,
    last_name   TEXT,
    nickname    TEXT,
    -- Set when this contact was merged into another; it then has no identities of its own.
    merged_into UUID REFERENCES contacts (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX contacts_tenant ON contacts (tenant_id, created_at);

-- How a contact is recognised: an email address and a phone number are the same person on every
-- channel; an external id (a messaging platform's user id) is only meaningful on its channel.
CREATE TABLE contact_identities (
    tenant_id  BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    contact_id UUID        NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    kind       TEXT        NOT NULL CHECK (kind IN ('email', 'phone', 'external')),
    -- Emails lower-cased, phone numbers as `+` and digits.
    value      TEXT        NOT NULL CHECK (length(value) BETWEEN 1 AND 320),
    -- The channel of an external id; the nil UUID for emails and phone numbers.
    channel_id UUID        NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, channel_id, value)
);
CREATE INDEX contact_identities_contact ON contact_identities (contact_id);

CREATE TABLE interactions (
    id               UUID PRIMARY KEY,
    tenant_id        BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel_id       UUID        NOT NULL REFERENCES channels (id),
    contact_id       UUID        REFERENCES contacts (id),
    media            TEXT        NOT NULL DEFAULT 'chat',
    state            TEXT        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'ended')),
    user_data        JSONB       NOT NULL DEFAULT '{}',
    -- The position the next message takes; bumped in the statement that inserts it, so the row
    -- lock orders concurrent senders and positions are committed in order.
    next_position    INTEGER     NOT NULL DEFAULT 1,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_activity_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at         TIMESTAMPTZ,
    ended_reason     TEXT
);
CREATE INDEX interactions_contact ON interactions (tenant_id, contact_id, created_at DESC, id);
CREATE INDEX interactions_tenant_time ON interactions (tenant_id, created_at DESC, id);

CREATE TABLE participants (
    id             UUID PRIMARY KEY,
    interaction_id UUID        NOT NULL REFERENCES interactions (id) ON DELETE CASCADE,
    tenant_id      BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind           TEXT        NOT NULL CHECK (kind IN ('Customer', 'Agent', 'Bot', 'Supervisor', 'System')),
    nickname       TEXT        NOT NULL,
    joined_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    left_at        TIMESTAMPTZ
);
CREATE INDEX participants_interaction ON participants (interaction_id);

CREATE TABLE messages (
    interaction_id    UUID        NOT NULL REFERENCES interactions (id) ON DELETE CASCADE,
    position          INTEGER     NOT NULL,
    tenant_id         BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Text, CustomNotice, ParticipantJoined, ParticipantLeft, UserDataUpdated, ChatEnded, ...
    type              TEXT        NOT NULL,
    participant_id    UUID,
    sender_kind       TEXT        NOT NULL CHECK (sender_kind IN ('Customer', 'Agent', 'Bot', 'Supervisor', 'System')),
    nickname          TEXT        NOT NULL DEFAULT '',
    text              TEXT,
    data              JSONB,
    visibility        TEXT        NOT NULL DEFAULT 'All' CHECK (visibility IN ('All', 'Agent', 'Supervisor')),
    delivery_status   TEXT        NOT NULL DEFAULT 'accepted'
                                  CHECK (delivery_status IN ('accepted', 'sent', 'delivered', 'read', 'failed')),
    -- The sender's own id for the message, so that a retried send is stored once.
    client_message_id TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (interaction_id, position)
);
CREATE UNIQUE INDEX messages_client_id ON messages (interaction_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
CREATE INDEX messages_tenant_time ON messages (tenant_id, created_at, interaction_id, position);
CREATE INDEX messages_text_search ON messages USING gin (to_tsvector('simple', coalesce(text, '')));

CREATE TABLE provisioning_audit (
    id        BIGSERIAL PRIMARY KEY,
    -- Kept when the tenant is deleted: the audit outlives what it describes.
    tenant_id BIGINT,
    ccid      TEXT,
    actor     TEXT        NOT NULL,
    action    TEXT        NOT NULL,
    entity    TEXT        NOT NULL,
    entity_id TEXT        NOT NULL,
    detail    JSONB       NOT NULL DEFAULT '{}',
    at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX provisioning_audit_tenant ON provisioning_audit (ccid, id);

-- The APIs' JSON for each object, rendered by the database: every path that returns an object
-- (a send, a transcript read, a rebuild of the live state after Redis lost it) gets the same bytes.

CREATE FUNCTION nexus_ts(t TIMESTAMPTZ) RETURNS TEXT LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION nexus_message_json(m messages) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'position', m.position,
        'type', m.type,
        'from', jsonb_build_object('participantId', m.participant_id, 'type', m.sender_kind, 'nickname', m.nickname),
        'text', m.text,
        'data', m.data,
        'visibility', m.visibility,
        'deliveryStatus', m.delivery_status,
        'clientMessageId', m.client_message_id,
        'timestamp', nexus_ts(m.created_at)))
$$;

CREATE FUNCTION nexus_interaction_json(i interactions) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', i.id,
        'channelId', i.channel_id,
        'contactId', i.contact_id,
        'media', i.media,
        'state', i.state,
        'userData', i.user_data,
        'messageCount', i.next_position - 1,
        'createdAt', nexus_ts(i.created_at),
        'lastActivityAt', nexus_ts(i.last_activity_at),
        'endedAt', nexus_ts(i.ended_at),
        'endedReason', i.ended_reason))
$$;

CREATE FUNCTION nexus_contact_json(c contacts) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', c.id,
        'firstName', c.first_name,
        'lastName', c.last_name,
        'nickname', c.nickname,
        'mergedInto', c.merged_into,
        'identities', (
            SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                       'kind', ci.kind,
                       'value', ci.value,
                       'channelId', nullif(ci.channel_id, '00000000-0000-0000-0000-000000000000')))
                       ORDER BY ci.kind, ci.value), '[]')
            FROM contact_identities ci WHERE ci.contact_id = c.id),
        'createdAt', nexus_ts(c.created_at),
        'updatedAt', nexus_ts(c.updated_at)))
$$;

CREATE FUNCTION nexus_tenant_json(t tenants) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'ccid', t.ccid,
        'name', t.name,
        'enabled', t.enabled,
        'createdAt', nexus_ts(t.created_at),
        'updatedAt', nexus_ts(t.updated_at))
$$;

CREATE FUNCTION nexus_api_key_json(k api_keys) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', k.id,
        'name', k.name,
        'permission', k.permission,
        'prefix', k.key_prefix,
        'enabled', k.enabled,
        'expiresAt', nexus_ts(k.expires_at),
        'expired', coalesce(k.expires_at <= now(), false),
        'copiedFrom', k.copied_from,
        'createdAt', nexus_ts(k.created_at),
        'updatedAt', nexus_ts(k.updated_at)))
$$;

-- A channel's secrets are not part of it: they are returned once, when created or rotated.
CREATE FUNCTION nexus_channel_json(c channels) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', c.id,
        'type', c.type,
        'name', c.name,
        'enabled', c.enabled,
        'settings', c.settings,
        'previousSecretExpiresAt', nexus_ts(c.previous_secret_expires_at),
        'createdAt', nexus_ts(c.created_at),
        'updatedAt', nexus_ts(c.updated_at)))
$$;
