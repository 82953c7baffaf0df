-- Third-party bots (issue 5): a tenant registers a bot by the URL nexus calls with each turn of
-- a conversation, and the credentials it sends there; a channel's routing rule names the bot
-- that answers first. While a bot holds a conversation (routing_state 'bot'), each message the
-- customer writes queues a turn, a durable job of the `bots` component, in the same
-- transaction as the message; the bot's answer is its actions (reply, ask, set user data,
-- hand off to a queue, end).

CREATE TABLE bots (
    id            UUID        PRIMARY KEY,
    tenant_id     BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          TEXT        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    -- What the customer sees as the bot's name.
    nickname      TEXT        NOT NULL CHECK (length(nickname) BETWEEN 1 AND 100),
    url           TEXT        NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    -- The headers sent with every turn (an Authorization, an API key), sealed with
    -- XChaCha20-Poly1305 under the application's credentials_key and bound to the bot's id.
    -- Only the `bots` component, which calls the bot, holds the key; the API never reads it back.
    credentials   TEXT,
    -- Their names, to show what is set without showing it.
    credential_names TEXT[]   NOT NULL DEFAULT '{}',
    -- How long a turn waits for the bot's answer before the conversation goes to routing.
    response_timeout_seconds INTEGER NOT NULL DEFAULT 10
                  CHECK (response_timeout_seconds BETWEEN 1 AND 30),
    enabled       BOOLEAN     NOT NULL DEFAULT true,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- A rule names a bot of its own tenant; a bot in use cannot be deleted. NOT VALID: rules saved
-- before this migration named bots that were never registered, and keep working (they route
-- straight to their queue).
ALTER TABLE routing_rules ADD CONSTRAINT routing_rules_bot
    FOREIGN KEY (tenant_id, bot) REFERENCES bots (tenant_id, name)
    ON UPDATE CASCADE ON DELETE RESTRICT NOT VALID;

ALTER TABLE interactions DROP CONSTRAINT interactions_routing_state_check;
ALTER TABLE interactions
    -- bot: a bot holds the conversation, before routing.
    ADD CONSTRAINT interactions_routing_state_check
        CHECK (routing_state IN ('none', 'bot', 'queued', 'invited', 'assigned', 'idle', 'done')),
    ADD COLUMN bot_id UUID REFERENCES bots (id) ON DELETE SET NULL,
    -- The position of the last message the bot was given: a turn sends what came after.
    ADD COLUMN bot_seen INTEGER NOT NULL DEFAULT 0;

CREATE FUNCTION nexus_bot_json(b bots) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', b.id,
        'name', b.name,
        'nickname', b.nickname,
        'url', b.url,
        'credentialNames', to_jsonb(b.credential_names),
        'responseTimeoutSeconds', b.response_timeout_seconds,
        'enabled', b.enabled,
        'createdAt', nexus_ts(b.created_at),
        'updatedAt', nexus_ts(b.updated_at))
$$;

-- Queues a turn for what the customer wrote while a bot holds the conversation. Turns of one
-- conversation run one at a time, in order; each sends every message the bot has not seen, so
-- a turn that finds nothing new is a no-op.
CREATE FUNCTION nexus_bot_turn() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM interactions i
                WHERE i.id = NEW.interaction_id AND i.routing_state = 'bot' AND i.state = 'active') THEN
        INSERT INTO jobs (id, tenant_id, component, kind, ordering_key, payload)
        VALUES (gen_random_uuid(), NEW.tenant_id, 'bots', 'turn', 'bots:' || NEW.interaction_id,
                jsonb_build_object('interactionId', NEW.interaction_id, 'position', NEW.position));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER bot_turn AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.sender_kind = 'Customer' AND NEW.type = 'Text')
    EXECUTE FUNCTION nexus_bot_turn();
