-- Campaign receipts that come before the send's answer, and unsubscribes from the email provider.
--
-- An aggregator may call back about a
-- campaign message before its answer to the send gave nexus the message's id: the receipt is
-- kept in `early_receipts` (now with the provider's reason for a failure) and applied when
-- `nexus_campaign_send_end` records the id. Both sides take the same transaction lock on the
-- channel and id (`nexus_receipt_lock`, as `components/guest/src/inbound.rs` does for a
-- conversation's messages), so a receipt is either applied at once or found by the send's end.
-- Receipts are looked up within their channel: a channel's signed callback moves only the
-- records of its own campaigns.

ALTER TABLE early_receipts ADD COLUMN reason TEXT;

-- A recipient who unsubscribes through the email provider (a list-unsubscribe, an unsubscribe
-- link, a spam complaint: `components/email`'s events) is suppressed with source `unsubscribe`,
-- which, like `keyword`, stays the recipient's: the tenant's own list does not take it over.
ALTER TABLE suppressions DROP CONSTRAINT suppressions_source_check;
ALTER TABLE suppressions ADD CONSTRAINT suppressions_source_check
    CHECK (source IN ('keyword', 'api', 'import', 'unsubscribe'));

-- The lock that orders a receipt for message `p_far_id` of channel `p_channel` with the
-- recording of that id (the same key as `inbound.rs`'s `lock_far_id`).
-- (PL/pgSQL: it runs for every message sent, and its plan is kept.)
CREATE FUNCTION nexus_receipt_lock(p_channel UUID, p_far_id TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('receipt/' || p_channel::text || '/' || p_far_id, 0));
END
$$;

-- A provider's receipt for message `p_provider_id` of a campaign of channel `p_channel`:
-- `delivered` (`read` counts as delivered) or `failed` (with `p_reason`), moving a record only
-- forward (a reply or an opt-out stays). Answers how many records it moved, or -1 when no
-- campaign of the channel sent that message.
CREATE FUNCTION nexus_campaign_receipt(p_channel UUID, p_provider_id TEXT, p_status TEXT,
                                       p_reason TEXT)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    status_now TEXT := CASE p_status WHEN 'read' THEN 'delivered' ELSE p_status END;
    moved INTEGER;
BEGIN
    PERFORM 1 FROM campaign_records r JOIN campaigns c ON c.id = r.campaign_id
     WHERE r.provider_id = p_provider_id AND c.channel_id = p_channel;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    UPDATE campaign_records r
       SET status = status_now, updated_at = now(),
           reason = CASE WHEN status_now = 'failed' THEN p_reason END
      FROM campaigns c
     WHERE c.id = r.campaign_id AND c.channel_id = p_channel AND r.provider_id = p_provider_id
       AND r.status IN ('sent', 'delivered')
       AND nexus_record_rank(status_now) > nexus_record_rank(r.status);
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;

-- The end of a `campaign-send` job (as in `0019_campaigns.sql`), which now applies a receipt
-- kept for the message before its id was known.
CREATE OR REPLACE FUNCTION nexus_campaign_send_end(p_campaign UUID, p_contact BIGINT, p_outcome TEXT,
                                        p_provider_id TEXT, p_reason TEXT,
                                        p_retry_seconds DOUBLE PRECISION)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    r campaign_records;
    c campaigns;
    wait DOUBLE PRECISION;
    early early_receipts;
BEGIN
    SELECT * INTO c FROM campaigns WHERE id = p_campaign;
    IF p_outcome = 'sent' AND p_provider_id IS NOT NULL AND FOUND THEN
        -- Before the record's lock, as the receipt's side takes them: a receipt for this id
        -- either finds the id recorded or is kept before this looks for it.
        PERFORM nexus_receipt_lock(c.channel_id, p_provider_id);
    END IF;
    SELECT * INTO r FROM campaign_records
     WHERE campaign_id = p_campaign AND contact_id = p_contact FOR UPDATE;
    IF NOT FOUND OR r.status <> 'queued' OR r.due_at IS NOT NULL THEN
        RETURN coalesce(r.status, 'gone');
    END IF;
    IF p_outcome = 'sent' THEN
        UPDATE campaign_records SET status = 'sent', provider_id = p_provider_id, reason = NULL,
               updated_at = now()
         WHERE campaign_id = p_campaign AND contact_id = p_contact;
        IF p_provider_id IS NULL THEN
            RETURN 'sent';
        END IF;
        DELETE FROM early_receipts
         WHERE channel_id = c.channel_id AND far_id = p_provider_id
        RETURNING * INTO early;
        IF FOUND AND early.received_at > now() - interval '1 hour' THEN
            PERFORM nexus_campaign_receipt(c.channel_id, p_provider_id, early.status, early.reason);
            SELECT status INTO r.status FROM campaign_records
             WHERE campaign_id = p_campaign AND contact_id = p_contact;
            RETURN r.status;
        END IF;
        RETURN 'sent';
    ELSIF p_outcome = 'throttled' THEN
        wait := greatest(coalesce(p_retry_seconds, 1), 0.1);
        UPDATE campaign_records SET attempts = greatest(attempts - 1, 0), reason = p_reason,
               due_at = now() + make_interval(secs => wait), updated_at = now()
         WHERE campaign_id = p_campaign AND contact_id = p_contact;
        -- Halved once a throttling: the 429s of the sends already out when it began count
        -- as one.
        UPDATE campaigns SET pace_factor = CASE
                   WHEN throttled_until IS NULL OR throttled_until <= now()
                   THEN greatest(0.05, pace_factor / 2) ELSE pace_factor END,
               throttled_until = greatest(coalesce(throttled_until, now()),
                                          now() + make_interval(secs => wait))
         WHERE id = p_campaign;
        RETURN 'queued';
    ELSIF p_outcome = 'retry' AND r.attempts < c.max_attempts THEN
        wait := c.backoff_seconds * power(2, greatest(r.attempts - 1, 0));
        UPDATE campaign_records SET reason = p_reason,
               due_at = now() + make_interval(secs => wait), updated_at = now()
         WHERE campaign_id = p_campaign AND contact_id = p_contact;
        RETURN 'queued';
    ELSE
        UPDATE campaign_records SET status = 'failed', reason = p_reason, updated_at = now()
         WHERE campaign_id = p_campaign AND contact_id = p_contact;
        RETURN 'failed';
    END IF;
END
$$;
