-- Email through providers: inbound parse webhooks (Mailgun's form) and outbound sends through a
-- transmissions API (SparkPost's shape). A provider API's credentials are write-only: kept here,
-- never shown by the provisioning API (`nexus_channel_json` leaves them out).
ALTER TABLE channels ADD COLUMN credentials JSONB NOT NULL DEFAULT '{}';

CREATE OR REPLACE FUNCTION nexus_messaging_outbound() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    v_type TEXT;
BEGIN
    IF NEW.sender_kind IN ('Agent', 'Bot', 'Supervisor') AND NEW.visibility = 'All'
       AND NEW.type IN ('Text', 'PushUrl') THEN
        SELECT c.type INTO v_type FROM interactions i JOIN channels c ON c.id = i.channel_id
         WHERE i.id = NEW.interaction_id;
        IF v_type IN ('messaging', 'sms', 'email') THEN
            INSERT INTO jobs (id, tenant_id, component, kind, ordering_key, payload)
            VALUES (gen_random_uuid(), NEW.tenant_id, v_type, 'outbound',
                    v_type || ':' || NEW.interaction_id,
                    jsonb_build_object('interactionId', NEW.interaction_id, 'position', NEW.position));
        END IF;
    END IF;
    RETURN NEW;
END
$$;
