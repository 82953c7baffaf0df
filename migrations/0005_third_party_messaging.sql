-- The Third-Party Messaging API: conversations with a custom messaging client (a bridge to any
-- platform) on a channel of type `messaging`. The client POSTs its users' messages in, signed
-- with the channel secret; what agents (and bots) say goes back to the client's webhook
-- (`settings.webhookUrl`) as a durable job of the `messaging` component, and the client's
-- `messageId` for it is kept to match the receipts it sends later.

ALTER TABLE messages ADD COLUMN external_id TEXT;
CREATE INDEX messages_external_id ON messages (tenant_id, external_id) WHERE external_id IS NOT NULL;
-- A client's user has one open conversation per channel.
CREATE INDEX interactions_open_by_contact ON interactions (channel_id, contact_id) WHERE state = 'active';

-- Queues the delivery of what the customer should see on a messaging channel, in the same
-- transaction as the message: ordered per conversation.
CREATE FUNCTION nexus_messaging_outbound() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.sender_kind IN ('Agent', 'Bot', 'Supervisor') AND NEW.visibility = 'All'
       AND NEW.type IN ('Text', 'PushUrl')
       AND EXISTS (SELECT 1 FROM interactions i JOIN channels c ON c.id = i.channel_id
                   WHERE i.id = NEW.interaction_id AND c.type = 'messaging') THEN
        INSERT INTO jobs (id, tenant_id, component, kind, ordering_key, payload)
        VALUES (gen_random_uuid(), NEW.tenant_id, 'messaging', 'outbound',
                'messaging:' || NEW.interaction_id,
                jsonb_build_object('interactionId', NEW.interaction_id, 'position', NEW.position));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER messaging_outbound AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION nexus_messaging_outbound();
