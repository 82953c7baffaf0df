-- Outbound campaigns (`/nexus/v3/outbound/campaigns`): a list's contacts messaged through one
-- channel with one template, on a schedule, within a contact-time window in each recipient's
-- own time zone, at a pace. The outbound component's pump (`nexus_campaign_pump`, every 100 ms
-- under nexus) hands due records to the channel component as `campaign-send` jobs; each job
-- sends its records' messages, reporting each (`nexus_campaign_send_begin`, `..._end`).
CREATE TABLE campaigns (
    id                 UUID        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name               TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    channel_id         UUID        NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    -- The channel's type, which names the component that sends (`sms`, `email`).
    channel_type       TEXT        NOT NULL CHECK (channel_type IN ('sms', 'email')),
    list_id            UUID        NOT NULL REFERENCES contact_lists (id) ON DELETE RESTRICT,
    -- The template as it was when the campaign was made: editing it changes no campaign.
    template_name      TEXT        NOT NULL,
    subject            TEXT,
    body               TEXT        NOT NULL,
    state              TEXT        NOT NULL DEFAULT 'draft'
                       CHECK (state IN ('draft', 'scheduled', 'running', 'paused', 'completed',
                                        'cancelled')),
    starts_at          TIMESTAMPTZ,
    ends_at            TIMESTAMPTZ CHECK (ends_at IS NULL OR starts_at IS NULL OR ends_at > starts_at),
    -- The contact-time window, local to each recipient: ISO days (1 Monday .. 7 Sunday) and
    -- hours [from, to).
    window_days        SMALLINT[]  NOT NULL DEFAULT '{1,2,3,4,5,6,7}',
    window_from        TIME        NOT NULL DEFAULT '00:00',
    window_to          TIME        NOT NULL DEFAULT '24:00' CHECK (window_to > window_from),
    default_time_zone  TEXT        NOT NULL DEFAULT 'UTC',
    -- Pacing: a token bucket of `burst` filled at `rate_per_second`, and at most
    -- `max_in_flight` sends handed out and not yet answered.
    rate_per_second    DOUBLE PRECISION NOT NULL CHECK (rate_per_second > 0 AND rate_per_second <= 10000),
    burst              INTEGER     NOT NULL CHECK (burst BETWEEN 1 AND 10000),
    max_in_flight      INTEGER     NOT NULL CHECK (max_in_flight BETWEEN 1 AND 10000),
    max_attempts       INTEGER     NOT NULL CHECK (max_attempts BETWEEN 1 AND 20),
    backoff_seconds    INTEGER     NOT NULL CHECK (backoff_seconds BETWEEN 1 AND 86400),
    -- After this long from the start, a record not sent expires.
    validity_seconds   INTEGER     CHECK (validity_seconds > 0),
    -- The pump's state: the bucket, and the share of the rate a provider's throttling left
    -- (halved by each 429, grown back by a tenth of the rate each second without one).
    tokens             DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens_at          TIMESTAMPTZ,
    pace_factor        DOUBLE PRECISION NOT NULL DEFAULT 1,
    throttled_until    TIMESTAMPTZ,
    -- The last event's number (`campaign_events.seq`), and the last the pump published to the
    -- campaign's sockets (the Redis topic `ws:topic:campaign:<id>`).
    event_seq          BIGINT      NOT NULL DEFAULT 0,
    published_seq      BIGINT      NOT NULL DEFAULT 0,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at         TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ
);
CREATE INDEX campaigns_tenant ON campaigns (tenant_id, created_at);
CREATE INDEX campaigns_live ON campaigns (id) WHERE state IN ('scheduled', 'running');
CREATE INDEX campaigns_unpublished ON campaigns (id) WHERE published_seq < event_seq;

-- One per contact of the campaign's list, made when it starts (the contact's address, zone and
-- variables copied, so that editing the list changes no running campaign). `due_at` is set while
-- the record waits for the pump (never handed out, or waiting to try again); a `queued` record
-- without it has a send job out.
CREATE TABLE campaign_records (
    campaign_id      UUID        NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id       BIGINT      NOT NULL,
    client_id        TEXT        NOT NULL,
    address          TEXT        NOT NULL,
    time_zone        TEXT        NOT NULL,
    variables        JSONB       NOT NULL,
    status           TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'queued', 'sent', 'delivered', 'failed',
                                       'replied', 'opted-out', 'expired', 'suppressed',
                                       'outside-window')),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    due_at           TIMESTAMPTZ,
    -- The provider's id of the message (Twilio's MessageSid), for its receipts.
    provider_id      TEXT,
    reason           TEXT,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, contact_id)
);
CREATE INDEX campaign_records_due ON campaign_records (campaign_id, due_at)
    WHERE due_at IS NOT NULL;
CREATE INDEX campaign_records_in_flight ON campaign_records (campaign_id)
    WHERE status = 'queued' AND due_at IS NULL;
-- The records not settled yet: the pump completes a campaign when there are none.
CREATE INDEX campaign_records_open ON campaign_records (campaign_id)
    WHERE status IN ('pending', 'queued');
CREATE INDEX campaign_records_provider ON campaign_records (provider_id)
    WHERE provider_id IS NOT NULL;
CREATE INDEX campaign_records_address ON campaign_records (address, updated_at)
    WHERE status IN ('sent', 'delivered', 'replied');

-- What happened to a campaign and its records, in order: its state changes (`campaign.running`,
-- ...) and each record's status changes (`record.sent`, ...), numbered 1, 2, 3, ... per campaign
-- with none left out (the number is taken under the campaign's row lock, so numbers commit in
-- order), for the status stream a campaign tool resumes from the last number it saw. Written by
-- triggers, in the transaction of the change.
CREATE TABLE campaign_events (
    campaign_id  UUID        NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    seq          BIGINT      NOT NULL,
    type         TEXT        NOT NULL,
    client_id    TEXT,
    status       TEXT,
    reason       TEXT,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, seq)
);

-- Logs an event of campaign `p_campaign` under the next number, and queues it for the tenant's
-- webhook endpoints that ask for its type (`record.sent`) or its kind (`record.*`): `*` alone
-- does not take them, so that an endpoint made for interactions is not sent a message per
-- record. A record's events reach an endpoint in order (ordered by endpoint and record), the
-- campaign's own in order (by endpoint and campaign).
CREATE FUNCTION nexus_campaign_log(p_campaign UUID, p_type TEXT, p_client TEXT, p_status TEXT,
                                   p_reason TEXT)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    next_seq BIGINT;
    owner BIGINT;
    e campaign_events;
BEGIN
    UPDATE campaigns SET event_seq = event_seq + 1 WHERE id = p_campaign
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

CREATE FUNCTION nexus_campaign_state_event() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nexus_campaign_log(NEW.id, 'campaign.' || NEW.state, NULL, NEW.state, NULL);
    RETURN NULL;
END
$$;
CREATE TRIGGER campaign_state_event AFTER UPDATE OF state ON campaigns
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION nexus_campaign_state_event();

CREATE FUNCTION nexus_record_status_event() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nexus_campaign_log(NEW.campaign_id, 'record.' || NEW.status, NEW.client_id,
                               NEW.status, NEW.reason);
    RETURN NULL;
END
$$;
CREATE TRIGGER record_status_event AFTER UPDATE OF status ON campaign_records
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION nexus_record_status_event();

-- An event as the API and the sockets show it.
CREATE FUNCTION nexus_campaign_event_json(e campaign_events) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'seq', e.seq, 'campaignId', e.campaign_id, 'type', e.type, 'clientId', e.client_id,
        'status', e.status, 'reason', e.reason, 'at', nexus_ts(e.at)))
$$;

-- How far each status is along, for "statuses only move forward": a record moves only to a
-- status further along (or, for `queued`, to itself: another attempt).
CREATE FUNCTION nexus_record_rank(p_status TEXT) RETURNS INTEGER LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_status
        WHEN 'pending' THEN 0 WHEN 'queued' THEN 1 WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3
        ELSE 4 END
$$;

-- When the window (`p_days`, `p_from` to `p_to`, local to `p_zone`) is next open from `p_now`:
-- `p_now` itself when it is open, NULL when it never is (no days).
CREATE FUNCTION nexus_window_opens(p_zone TEXT, p_days SMALLINT[], p_from TIME, p_to TIME,
                                   p_now TIMESTAMPTZ)
RETURNS TIMESTAMPTZ LANGUAGE plpgsql STABLE AS $$
DECLARE
    local_now TIMESTAMP := p_now AT TIME ZONE p_zone;
    candidate TIMESTAMP;
BEGIN
    IF extract(isodow FROM local_now)::smallint = ANY (p_days)
       AND local_now::time >= p_from AND (p_to = '24:00' OR local_now::time < p_to) THEN
        RETURN p_now;
    END IF;
    FOR day IN 0..7 LOOP
        candidate := (local_now::date + day) + p_from;
        IF candidate > local_now AND extract(isodow FROM candidate)::smallint = ANY (p_days) THEN
            RETURN candidate AT TIME ZONE p_zone;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- One turn of campaign `p_campaign`'s pump, under its row lock (a campaign another host is
-- pumping is skipped): starts it when its time comes; ends the records its end or validity
-- overtook; completes it when no record is left to send; otherwise refills its bucket and hands
-- out as many due records as the bucket, the in-flight limit and their windows allow, as
-- `campaign-send` jobs of the channel's component (ten records a job). A record whose window
-- is closed waits for it to open. Answers what it did.
CREATE FUNCTION nexus_campaign_pump(p_campaign UUID) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    c campaigns;
    elapsed DOUBLE PRECISION;
    factor DOUBLE PRECISION;
    bucket DOUBLE PRECISION;
    in_flight INTEGER;
    room INTEGER;
    handed INTEGER := 0;
    waiting INTEGER := 0;
    ended INTEGER := 0;
BEGIN
    SELECT * INTO c FROM campaigns WHERE id = p_campaign FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF c.state = 'scheduled' THEN
        IF c.starts_at IS NOT NULL AND c.starts_at > now() THEN
            RETURN jsonb_build_object('state', c.state);
        END IF;
        UPDATE campaigns SET state = 'running', started_at = coalesce(started_at, now()),
               tokens = 0, tokens_at = now(), updated_at = now()
         WHERE id = p_campaign RETURNING * INTO c;
    END IF;
    IF c.state <> 'running' THEN
        RETURN jsonb_build_object('state', c.state);
    END IF;

    -- Its end, or its records' validity, has come: what is not out yet will not go.
    IF (c.ends_at IS NOT NULL AND now() >= c.ends_at)
       OR (c.validity_seconds IS NOT NULL
           AND now() >= c.started_at + make_interval(secs => c.validity_seconds)) THEN
        UPDATE campaign_records r
           SET status = CASE WHEN nexus_window_opens(r.time_zone, c.window_days, c.window_from,
                                                     c.window_to, now()) = now()
                             THEN 'expired' ELSE 'outside-window' END,
               due_at = NULL, updated_at = now()
         WHERE r.campaign_id = p_campaign AND r.due_at IS NOT NULL;
        GET DIAGNOSTICS ended = ROW_COUNT;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM campaign_records
                    WHERE campaign_id = p_campaign AND status IN ('pending', 'queued')) THEN
        UPDATE campaigns SET state = 'completed', finished_at = now(), updated_at = now()
         WHERE id = p_campaign RETURNING * INTO c;
        RETURN jsonb_build_object('state', 'completed', 'ended', ended);
    END IF;

    elapsed := greatest(0, extract(epoch FROM now() - coalesce(c.tokens_at, now())));
    IF c.throttled_until IS NOT NULL AND c.throttled_until > now() THEN
        -- The provider asked for a pause: nothing goes out, and the bucket does not fill.
        UPDATE campaigns SET tokens = 0, tokens_at = now() WHERE id = p_campaign;
        RETURN jsonb_build_object('state', c.state, 'throttled', true, 'ended', ended);
    END IF;
    factor := least(1, c.pace_factor + 0.1 * elapsed);
    -- What was saved up is capped at the burst; what came in since the last turn (up to a
    -- second's worth) is all there, so that the pump's own cadence does not cap the rate.
    bucket := least(c.burst, c.tokens) + c.rate_per_second * factor * least(elapsed, 1);
    SELECT count(*) INTO in_flight FROM campaign_records
     WHERE campaign_id = p_campaign AND status = 'queued' AND due_at IS NULL;
    room := least(floor(bucket)::integer, c.max_in_flight - in_flight, 2000);

    IF room > 0 THEN
        WITH due AS (
            SELECT r.contact_id,
                   nexus_window_opens(r.time_zone, c.window_days, c.window_from, c.window_to,
                                      now()) AS opens
              FROM campaign_records r
             WHERE r.campaign_id = p_campaign AND r.due_at <= now()
             ORDER BY r.due_at, r.contact_id
             LIMIT room
               FOR UPDATE SKIP LOCKED),
        deferred AS (
            UPDATE campaign_records r
               SET due_at = d.opens, updated_at = now()
              FROM due d
             WHERE r.campaign_id = p_campaign AND r.contact_id = d.contact_id
               AND d.opens IS NOT NULL AND d.opens > now()
            RETURNING 1),
        never AS (
            UPDATE campaign_records r
               SET status = 'outside-window', due_at = NULL, updated_at = now(),
                   reason = 'the contact-time window has no day'
              FROM due d
             WHERE r.campaign_id = p_campaign AND r.contact_id = d.contact_id
               AND d.opens IS NULL
            RETURNING 1),
        handed_out AS (
            UPDATE campaign_records r
               SET status = 'queued', due_at = NULL, updated_at = now()
              FROM due d
             WHERE r.campaign_id = p_campaign AND r.contact_id = d.contact_id
               AND d.opens = now()
            RETURNING r.contact_id),
        -- Ten records a job: one send each, made one after the other, for a tenth of the
        -- queue's work per message.
        jobs_made AS (
            INSERT INTO jobs (id, tenant_id, component, kind, payload)
            SELECT gen_random_uuid(), c.tenant_id, c.channel_type, 'campaign-send',
                   jsonb_build_object('campaignId', p_campaign,
                                      'contactIds', jsonb_agg(h.contact_id ORDER BY h.contact_id))
              FROM (SELECT contact_id,
                           (row_number() OVER (ORDER BY contact_id) - 1) / 10 AS chunk
                      FROM handed_out) h
             GROUP BY h.chunk
            RETURNING 1)
        SELECT (SELECT count(*) FROM handed_out),
               (SELECT count(*) FROM deferred) + (SELECT count(*) FROM never)
          INTO handed, waiting;
    END IF;

    UPDATE campaigns SET tokens = bucket - handed, tokens_at = now(), pace_factor = factor
     WHERE id = p_campaign;
    RETURN jsonb_build_object('state', c.state, 'handed', handed, 'waiting', waiting,
                              'inFlight', in_flight + handed, 'ended', ended);
END
$$;

-- The start of a `campaign-send` job for record (`p_campaign`, `p_contact`): `send` with what
-- to send (and the attempt counted), or `skip` with why not: the record is not out for sending
-- (another run of the job dealt with it), its campaign is paused (the record waits for the
-- resume) or over, or its address is suppressed now (`suppressed`, final).
CREATE FUNCTION nexus_campaign_send_begin(p_campaign UUID, p_contact BIGINT)
RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    r campaign_records;
    c campaigns;
    why TEXT;
BEGIN
    SELECT * INTO r FROM campaign_records
     WHERE campaign_id = p_campaign AND contact_id = p_contact FOR UPDATE;
    IF NOT FOUND OR r.status <> 'queued' OR r.due_at IS NOT NULL THEN
        RETURN jsonb_build_object('action', 'skip', 'why', 'the record is not out for sending');
    END IF;
    SELECT * INTO c FROM campaigns WHERE id = p_campaign;
    IF c.state <> 'running' THEN
        -- Paused: the pump hands it out again on resume.
        UPDATE campaign_records SET due_at = now(), updated_at = now()
         WHERE campaign_id = p_campaign AND contact_id = p_contact;
        RETURN jsonb_build_object('action', 'skip', 'why', 'the campaign is ' || c.state);
    END IF;
    SELECT s.reason INTO why FROM suppressions s
     WHERE s.tenant_id = c.tenant_id AND s.address = r.address
       AND (s.channel_id IS NULL OR s.channel_id = c.channel_id)
       AND (s.expires_at IS NULL OR s.expires_at > now())
     ORDER BY s.id LIMIT 1;
    IF FOUND THEN
        UPDATE campaign_records SET status = 'suppressed', reason = why, updated_at = now()
         WHERE campaign_id = p_campaign AND contact_id = p_contact;
        RETURN jsonb_build_object('action', 'skip', 'why', 'suppressed');
    END IF;
    UPDATE campaign_records SET attempts = attempts + 1, updated_at = now()
     WHERE campaign_id = p_campaign AND contact_id = p_contact;
    RETURN jsonb_build_object(
        'action', 'send',
        'channelId', c.channel_id,
        'to', r.address,
        'clientId', r.client_id,
        'subject', c.subject,
        'body', c.body,
        'variables', r.variables,
        'attempt', r.attempts + 1);
END
$$;

-- The end of a `campaign-send` job: `sent` (with the provider's id), `failed` (with the
-- provider's reason; final), `retry` (a transient failure: again after the campaign's backoff,
-- doubling, until its attempts run out) or `throttled` (the provider's 429: again after
-- `p_retry_seconds`, the attempt not counted, and the campaign paused that long with its pace
-- halved). Only a record still out for sending moves.
CREATE FUNCTION nexus_campaign_send_end(p_campaign UUID, p_contact BIGINT, p_outcome TEXT,
                                        p_provider_id TEXT, p_reason TEXT,
                                        p_retry_seconds DOUBLE PRECISION)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    r campaign_records;
    c campaigns;
    wait DOUBLE PRECISION;
BEGIN
    SELECT * INTO r FROM campaign_records
     WHERE campaign_id = p_campaign AND contact_id = p_contact FOR UPDATE;
    IF NOT FOUND OR r.status <> 'queued' OR r.due_at IS NOT NULL THEN
        RETURN coalesce(r.status, 'gone');
    END IF;
    SELECT * INTO c FROM campaigns WHERE id = p_campaign;
    IF p_outcome = 'sent' THEN
        UPDATE campaign_records SET status = 'sent', provider_id = p_provider_id, reason = NULL,
               updated_at = now()
         WHERE campaign_id = p_campaign AND contact_id = p_contact;
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

-- A provider's receipt for message `p_provider_id` of a campaign: `delivered` or `failed`,
-- moving a record only forward (a reply or an opt-out stays). Answers how many records it
-- moved, or -1 when no campaign sent that message.
CREATE FUNCTION nexus_campaign_receipt(p_provider_id TEXT, p_status TEXT, p_reason TEXT)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    moved INTEGER;
BEGIN
    PERFORM 1 FROM campaign_records WHERE provider_id = p_provider_id;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    UPDATE campaign_records SET status = p_status, reason = p_reason, updated_at = now()
     WHERE provider_id = p_provider_id AND status IN ('sent', 'delivered')
       AND nexus_record_rank(p_status) > nexus_record_rank(status);
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;

-- Counts of a campaign's records by status.
CREATE FUNCTION nexus_campaign_counts(p_campaign UUID) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
      FROM (SELECT status, count(*) AS n FROM campaign_records
             WHERE campaign_id = p_campaign GROUP BY status) counted
$$;

-- A text from `p_address` to channel `p_channel` of tenant `p_tenant`: the campaign message it
-- answers is the last one sent to that number from that channel in the past 30 days. A reply
-- moves the record to `replied`, an opt-out (`p_opt_out`) to `opted-out` (from `replied` too).
-- Answers the campaign and record it answers (`{campaignId, campaignName, clientId}`), or
-- NULL.
CREATE FUNCTION nexus_campaign_answered(p_tenant BIGINT, p_channel UUID, p_address TEXT,
                                        p_opt_out BOOLEAN)
RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    found_campaign UUID;
    found_contact BIGINT;
    answered JSONB;
BEGIN
    SELECT r.campaign_id, r.contact_id,
           jsonb_build_object('campaignId', c.id, 'campaignName', c.name, 'clientId', r.client_id)
      INTO found_campaign, found_contact, answered
      FROM campaign_records r JOIN campaigns c ON c.id = r.campaign_id
     WHERE r.address = p_address AND r.status IN ('sent', 'delivered', 'replied')
       AND r.updated_at > now() - interval '30 days'
       AND c.tenant_id = p_tenant AND c.channel_id = p_channel
     ORDER BY r.updated_at DESC LIMIT 1
       FOR UPDATE OF r;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE campaign_records
       SET status = CASE WHEN p_opt_out THEN 'opted-out' ELSE 'replied' END,
           reason = CASE WHEN p_opt_out THEN 'the recipient opted out' ELSE reason END
     WHERE campaign_id = found_campaign AND contact_id = found_contact
       AND status <> CASE WHEN p_opt_out THEN 'opted-out' ELSE 'replied' END;
    RETURN answered;
END
$$;
