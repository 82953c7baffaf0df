-- Durable jobs, and the interaction webhooks that are the first kind of them.
--
-- A job is work for an integration component (a webhook delivery, later a third-party send, an
-- SMS, a bot call). It is written in the same transaction as the change that causes it, so a
-- committed change never lacks its job. Workers (the nexus host, or a component's sweep under
-- Spin) claim due jobs with `nexus_claim_jobs`, which never hands one job to two workers at
-- once, and report with `nexus_finish_job`. A claim is a lease: a worker that dies leaves its
-- job to be claimed again when the lease runs out (at-least-once).

CREATE TABLE jobs (
    id            UUID        PRIMARY KEY,
    -- Creation order, for the order of jobs that share an ordering key.
    seq           BIGSERIAL   NOT NULL UNIQUE,
    tenant_id     BIGINT      REFERENCES tenants(id) ON DELETE CASCADE,
    -- The component that runs it (its `[component.NAME.tool.nexus.jobs]`).
    component     TEXT        NOT NULL,
    kind          TEXT        NOT NULL,
    -- Jobs with the same key run one at a time, oldest first (a webhook endpoint's events of one
    -- interaction); NULL: no order.
    ordering_key  TEXT,
    payload       JSONB       NOT NULL,
    state         TEXT        NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'running', 'succeeded', 'dead')),
    attempts      INTEGER     NOT NULL DEFAULT 0,
    run_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_by     TEXT,
    locked_until  TIMESTAMPTZ,
    last_status   INTEGER,
    last_error    TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ
);
CREATE INDEX jobs_due ON jobs (component, run_at) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_ordered ON jobs (ordering_key, seq) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, created_at DESC);

-- Every attempt, for the jobs API (what was tried, when, and what came back).
CREATE TABLE job_attempts (
    id          BIGSERIAL   PRIMARY KEY,
    job_id      UUID        NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt     INTEGER     NOT NULL,
    worker      TEXT        NOT NULL,
    outcome     TEXT        NOT NULL CHECK (outcome IN ('succeeded', 'retry', 'dead')),
    status      INTEGER,
    detail      TEXT,
    finished_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX job_attempts_by_job ON job_attempts (job_id, id);

-- Claims up to `p_limit` due jobs of `p_component` for `p_worker`, for `p_lease_ms`. Due: pending
-- and past `run_at`, or running under a lease that ran out (its worker died). A job with an
-- ordering key waits while an older job with that key is unfinished, so a key's jobs run in
-- order even across workers.
CREATE FUNCTION nexus_claim_jobs(p_component TEXT, p_worker TEXT, p_limit INTEGER, p_lease_ms BIGINT)
RETURNS SETOF jobs LANGUAGE sql AS $$
    UPDATE jobs j
       SET state = 'running', attempts = j.attempts + 1, locked_by = p_worker,
           locked_until = now() + p_lease_ms * interval '1 millisecond', updated_at = now()
     WHERE j.id IN (
        SELECT c.id FROM jobs c
         WHERE c.component = p_component
           AND ((c.state = 'pending' AND c.run_at <= now())
                OR (c.state = 'running' AND c.locked_until < now()))
           AND (c.ordering_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM jobs e
                 WHERE e.ordering_key = c.ordering_key AND e.seq < c.seq
                   AND e.state IN ('pending', 'running')))
         ORDER BY c.run_at, c.seq
         LIMIT p_limit
         FOR UPDATE SKIP LOCKED)
    RETURNING j.*
$$;

-- Records how attempt `attempts` of job `p_id` ended, if `p_worker` still holds it (a worker
-- whose lease ran out and was claimed again reports nothing). `p_outcome`: succeeded, retry
-- (in `p_retry_ms`), dead. Returns the job's new state, or NULL when the worker no longer held it.
CREATE FUNCTION nexus_finish_job(p_id UUID, p_worker TEXT, p_outcome TEXT, p_status INTEGER,
                                 p_detail TEXT, p_retry_ms BIGINT)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    v_attempt INTEGER;
    v_state TEXT;
BEGIN
    v_state := CASE p_outcome WHEN 'retry' THEN 'pending' ELSE p_outcome END;
    UPDATE jobs
       SET state = v_state,
           run_at = coalesce(now() + p_retry_ms * interval '1 millisecond', run_at), locked_by = NULL,
           locked_until = NULL, last_status = p_status, last_error = left(p_detail, 2000),
           updated_at = now(), finished_at = CASE WHEN v_state = 'pending' THEN NULL ELSE now() END
     WHERE id = p_id AND state = 'running' AND locked_by = p_worker
    RETURNING attempts INTO v_attempt;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO job_attempts (job_id, attempt, worker, outcome, status, detail)
    VALUES (p_id, v_attempt, p_worker, p_outcome, p_status, left(p_detail, 2000));
    RETURN v_state;
END
$$;

CREATE FUNCTION nexus_job_json(j jobs) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', j.id,
        'component', j.component,
        'kind', j.kind,
        'orderingKey', j.ordering_key,
        'payload', j.payload,
        'state', j.state,
        'attempts', j.attempts,
        'runAt', nexus_ts(j.run_at),
        'lastStatus', j.last_status,
        'lastError', j.last_error,
        'createdAt', nexus_ts(j.created_at),
        'updatedAt', nexus_ts(j.updated_at),
        'finishedAt', nexus_ts(j.finished_at)))
$$;

-- A tenant's webhook endpoints: where its interaction events go, signed with `secret` (the
-- Standard Webhooks form, `whsec_` + base64). After a rotation the previous secret signs too,
-- until `previous_secret_expires_at`, so a receiver can switch without losing a delivery.
CREATE TABLE webhook_endpoints (
    id                         UUID        PRIMARY KEY,
    tenant_id                  BIGINT      NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url                        TEXT        NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    -- Event types, or '*' for all of them.
    events                     TEXT[]      NOT NULL,
    description                TEXT,
    enabled                    BOOLEAN     NOT NULL DEFAULT true,
    secret                     TEXT        NOT NULL,
    previous_secret            TEXT,
    previous_secret_expires_at TIMESTAMPTZ,
    created_at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                 TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id);

CREATE FUNCTION nexus_webhook_json(w webhook_endpoints) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', w.id,
        'url', w.url,
        'events', to_jsonb(w.events),
        'description', w.description,
        'enabled', w.enabled,
        'previousSecretExpiresAt', nexus_ts(w.previous_secret_expires_at),
        'createdAt', nexus_ts(w.created_at),
        'updatedAt', nexus_ts(w.updated_at)))
$$;

-- Queues one delivery of event `p_type` about interaction `p_interaction` to each of the
-- tenant's endpoints that asked for it, for the `webhooks` component. The body is fixed now:
-- every retry sends the same event.
CREATE FUNCTION nexus_emit_webhook(p_tenant BIGINT, p_interaction UUID, p_type TEXT, p_data JSONB)
RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO jobs (id, tenant_id, component, kind, ordering_key, payload)
    SELECT gen_random_uuid(), p_tenant, 'webhooks', 'webhook',
           'webhook:' || w.id || ':' || p_interaction,
           jsonb_build_object(
               'endpointId', w.id,
               'body', jsonb_build_object(
                   'type', p_type,
                   'timestamp', nexus_ts(now()),
                   'interactionId', p_interaction,
                   'data', p_data))
      FROM webhook_endpoints w
     WHERE w.tenant_id = p_tenant AND w.enabled AND (p_type = ANY (w.events) OR '*' = ANY (w.events))
$$;

-- The interaction events, raised where the change is made, whichever component makes it.
CREATE FUNCTION nexus_interaction_events() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM nexus_emit_webhook(NEW.tenant_id, NEW.id, 'STARTED', nexus_interaction_json(NEW));
        RETURN NEW;
    END IF;
    IF NEW.state = 'ended' AND OLD.state <> 'ended' THEN
        PERFORM nexus_emit_webhook(NEW.tenant_id, NEW.id, 'FINISHED', nexus_interaction_json(NEW));
    END IF;
    IF NEW.routing_state <> OLD.routing_state AND NEW.routing_state IN ('queued', 'idle') THEN
        PERFORM nexus_emit_webhook(NEW.tenant_id, NEW.id, upper(NEW.routing_state),
            nexus_interaction_json(NEW) || jsonb_strip_nulls(jsonb_build_object('queue', NEW.queue)));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER interaction_events AFTER INSERT OR UPDATE ON interactions
    FOR EACH ROW EXECUTE FUNCTION nexus_interaction_events();

CREATE FUNCTION nexus_participant_events() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.agent_id IS NULL THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM nexus_emit_webhook(NEW.tenant_id, NEW.interaction_id, 'AGENT_JOINED',
            jsonb_strip_nulls(jsonb_build_object('agentId', NEW.agent_id, 'nickname', NEW.nickname, 'role', NEW.role)));
    ELSIF NEW.left_at IS NOT NULL AND OLD.left_at IS NULL THEN
        PERFORM nexus_emit_webhook(NEW.tenant_id, NEW.interaction_id, 'AGENT_LEFT',
            jsonb_strip_nulls(jsonb_build_object('agentId', NEW.agent_id, 'nickname', NEW.nickname, 'role', NEW.role)));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER participant_events AFTER INSERT OR UPDATE ON participants
    FOR EACH ROW EXECUTE FUNCTION nexus_participant_events();

CREATE FUNCTION nexus_message_events() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type IN ('Text', 'PushUrl', 'CustomNotice') THEN
        PERFORM nexus_emit_webhook(NEW.tenant_id, NEW.interaction_id, 'MESSAGE', nexus_message_json(NEW));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER message_events AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION nexus_message_events();
