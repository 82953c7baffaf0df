-- A campaign's records counted by status as they move, rather than counted again on every read:
-- a campaign tool polls the counts, and the metrics are scraped, while a campaign of a million
-- records runs. `campaigns.record_counts` (`{"sent": 9000, "delivered": 800, ...}`, no zeros)
-- is kept by the triggers that log the records' events, in the same update of the campaign's row
-- that takes the event's number, so it costs the send path no extra row version.

ALTER TABLE campaigns ADD COLUMN record_counts JSONB NOT NULL DEFAULT '{}'::jsonb;
UPDATE campaigns c SET record_counts = nexus_campaign_counts(c.id);

-- `p_counts` with `p_by` added to status `p_status` (a status whose count reaches 0 is left out).
-- PL/pgSQL, not SQL: it runs for every record's every move, and a SQL function that is not
-- inlined is planned again on each call.
CREATE FUNCTION nexus_count_add(p_counts JSONB, p_status TEXT, p_by BIGINT) RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n BIGINT;
BEGIN
    IF p_status IS NULL OR p_by = 0 THEN
        RETURN p_counts;
    END IF;
    n := coalesce((p_counts ->> p_status)::bigint, 0) + p_by;
    IF n <= 0 THEN
        RETURN p_counts - p_status;
    END IF;
    RETURN jsonb_set(p_counts, ARRAY[p_status], to_jsonb(n));
END
$$;

-- `nexus_campaign_log` (as in `0019_campaigns.sql`), for a record that moved from status
-- `p_from` to `p_status`: the event's number and the counts change in one update.
CREATE FUNCTION nexus_campaign_log(p_campaign UUID, p_type TEXT, p_client TEXT, p_status TEXT,
                                   p_reason TEXT, p_from TEXT)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    next_seq BIGINT;
    owner BIGINT;
    e campaign_events;
BEGIN
    UPDATE campaigns
       SET event_seq = event_seq + 1,
           record_counts = CASE WHEN p_from IS NULL THEN record_counts
                                ELSE nexus_count_add(nexus_count_add(record_counts, p_from, -1),
                                                     p_status, 1) END
     WHERE id = p_campaign
    RETURNING event_seq, tenant_id INTO next_seq, owner;
    INSERT INTO campaign_events (campaign_id, seq, type, client_id, status, reason)
    VALUES (p_campaign, next_seq, p_type, p_client, p_status, p_reason)
    RETURNING * INTO e;
    INSERT INTO jobs (id, tenant_id, component, kind, ordering_key, payload)
    SELECT gen_random_uuid(), owner, 'webhooks', 'webhook',
           'webhook:' || w.id || ':' || p_campaign || coalesce(':' || p_client, ''),
           jsonb_build_object(
               'endpointId', w.id,
               'body', jsonb_build_object(
                   'type', p_type,
                   'timestamp', nexus_ts(now()),
                   'campaignId', p_campaign,
                   'data', nexus_campaign_event_json(e)))
      FROM webhook_endpoints w
     WHERE w.tenant_id = owner AND w.enabled
       AND (p_type = ANY (w.events) OR split_part(p_type, '.', 1) || '.*' = ANY (w.events));
END
$$;

-- The campaign's own events move no record.
CREATE OR REPLACE FUNCTION nexus_campaign_log(p_campaign UUID, p_type TEXT, p_client TEXT,
                                              p_status TEXT, p_reason TEXT)
RETURNS VOID LANGUAGE sql AS $$
    SELECT nexus_campaign_log(p_campaign, p_type, p_client, p_status, p_reason, NULL)
$$;

CREATE OR REPLACE FUNCTION nexus_record_status_event() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nexus_campaign_log(NEW.campaign_id, 'record.' || NEW.status, NEW.client_id,
                               NEW.status, NEW.reason, OLD.status);
    RETURN NULL;
END
$$;

-- The records a campaign's start makes (all at once, in one statement) are counted once.
CREATE FUNCTION nexus_records_added() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    UPDATE campaigns c
       SET record_counts = (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
                              FROM (SELECT status, count(*) + coalesce((c.record_counts ->> status)::bigint, 0) AS n
                                      FROM added WHERE added.campaign_id = c.id GROUP BY status) counted)
                           || (c.record_counts - ARRAY(SELECT DISTINCT status FROM added
                                                        WHERE added.campaign_id = c.id))
     WHERE c.id IN (SELECT DISTINCT campaign_id FROM added);
    RETURN NULL;
END
$$;
CREATE TRIGGER records_added AFTER INSERT ON campaign_records
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION nexus_records_added();

-- What a campaign's counts were: kept for the hosts of the previous release during an upgrade.
CREATE OR REPLACE FUNCTION nexus_campaign_counts(p_campaign UUID) RETURNS JSONB
LANGUAGE sql STABLE AS $$
    SELECT record_counts FROM campaigns WHERE id = p_campaign
$$;
