-- Agents, queues and routing (issue 4). PostgreSQL keeps who agents are, how conversations are
-- routed and where each one stands; Redis keeps the live part (who is ready, queue order,
-- loads, event logs), rebuilt from here where it is lost.

CREATE TABLE agents (
    id          UUID PRIMARY KEY,
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    username    TEXT        NOT NULL CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$'),
    nickname    TEXT        NOT NULL CHECK (length(nickname) BETWEEN 1 AND 100),
    -- agent: works conversations; supervisor: also monitors, coaches and barges in.
    role        TEXT        NOT NULL DEFAULT 'agent' CHECK (role IN ('agent', 'supervisor')),
    -- SHA-256 of the agent's bearer token (`nxa_...`), which is shown once.
    token_hash  TEXT        NOT NULL UNIQUE,
    skills      TEXT[]      NOT NULL DEFAULT '{}',
    -- Conversations at once, per media: {"chat": 3}.
    capacity    JSONB       NOT NULL DEFAULT '{"chat": 3}',
    enabled     BOOLEAN     NOT NULL DEFAULT true,
    -- The agent's state, also kept here so that a Redis restart does not log everyone out.
    state       TEXT        NOT NULL DEFAULT 'logged_out' CHECK (state IN ('ready', 'not_ready', 'logged_out')),
    state_reason TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, username)
);

CREATE TABLE queues (
    tenant_id       BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            TEXT        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    -- An agent must have every one of these to be offered the queue's conversations.
    skills          TEXT[]      NOT NULL DEFAULT '{}',
    -- After this long waiting, a conversation moves to the overflow queue (if there is one).
    timeout_seconds INTEGER     CHECK (timeout_seconds IS NULL OR timeout_seconds > 0),
    overflow_queue  TEXT,
    -- {"timezone": "Europe/Paris", "days": {"mon": ["09:00", "17:00"], ...}}; null = always open.
    business_hours  JSONB,
    -- Told to a customer who arrives while the queue is closed.
    closed_message  TEXT,
    -- How long an invitation waits for an answer before it goes to another agent.
    invite_timeout_seconds INTEGER NOT NULL DEFAULT 30 CHECK (invite_timeout_seconds > 0),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Per channel (a chat endpoint, a messaging channel, ...): which bot answers first and which
-- queue follows. The "designer" connection of the original product.
CREATE TABLE routing_rules (
    channel_id UUID PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    tenant_id  BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    bot        TEXT,
    queue      TEXT        NOT NULL,
    -- Offer a returning contact to the agent who last served them, if that agent is free.
    last_agent BOOLEAN     NOT NULL DEFAULT true,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, queue) REFERENCES queues (tenant_id, name) ON DELETE RESTRICT
);

ALTER TABLE interactions
    -- none: not routed; queued; invited: offered to an agent; assigned: an agent has it;
    -- idle: no agent left and the chat kept open (async); done: marked done by an agent.
    ADD COLUMN routing_state TEXT NOT NULL DEFAULT 'none'
        CHECK (routing_state IN ('none', 'queued', 'invited', 'assigned', 'idle', 'done')),
    ADD COLUMN queue TEXT,
    ADD COLUMN queued_at TIMESTAMPTZ,
    ADD COLUMN invited_agent_id UUID REFERENCES agents (id) ON DELETE SET NULL,
    ADD COLUMN last_agent_id UUID REFERENCES agents (id) ON DELETE SET NULL;
CREATE INDEX interactions_routing ON interactions (tenant_id, routing_state, queue, queued_at)
    WHERE routing_state IN ('queued', 'invited');

ALTER TABLE participants
    ADD COLUMN agent_id UUID REFERENCES agents (id) ON DELETE SET NULL,
    -- How an agent takes part: primary (owns it), conference, consult (not seen by the
    -- customer), monitor (sees, says nothing), coach (says to agents only), barge (says to all).
    ADD COLUMN role TEXT CHECK (role IN ('primary', 'conference', 'consult', 'monitor', 'coach', 'barge'));
CREATE INDEX participants_agent ON participants (agent_id) WHERE left_at IS NULL;

CREATE FUNCTION nexus_agent_json(a agents) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', a.id,
        'username', a.username,
        'nickname', a.nickname,
        'role', a.role,
        'skills', to_jsonb(a.skills),
        'capacity', a.capacity,
        'enabled', a.enabled,
        'state', a.state,
        'stateReason', a.state_reason,
        'createdAt', nexus_ts(a.created_at)))
$$;

CREATE FUNCTION nexus_queue_json(q queues) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'name', q.name,
        'skills', to_jsonb(q.skills),
        'timeoutSeconds', q.timeout_seconds,
        'overflowQueue', q.overflow_queue,
        'businessHours', q.business_hours,
        'closedMessage', q.closed_message,
        'inviteTimeoutSeconds', q.invite_timeout_seconds))
$$;

-- What an agent desktop sees of an interaction.
CREATE FUNCTION nexus_work_json(i interactions) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT nexus_interaction_json(i) || jsonb_strip_nulls(jsonb_build_object(
        'routingState', i.routing_state,
        'queue', i.queue,
        'participants', (SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                'participantId', p.id, 'type', p.kind, 'nickname', p.nickname,
                'agentId', p.agent_id, 'role', p.role)) ORDER BY p.joined_at), '[]'::jsonb)
            FROM participants p WHERE p.interaction_id = i.id AND p.left_at IS NULL)))
$$;
