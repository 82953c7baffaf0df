-- Tenant components (issue 6): a tenant's own sandboxed code, a `bot` (a channel's routing
-- rule gives it new conversations, like a third-party bot) or a `transform` (a chain of them
-- sees each message on a channel, inbound or outbound, before it is stored). Each upload is a
-- new version, kept; one version is active. Hosts cache the compiled active version by the
-- component's revision, which every change they must see bumps (an activation, a rollback, new
-- limits, disabling or enabling): a caller reads the revision with the binding and passes it
-- along, so a host never serves a call with a revision older than the one its caller saw.

CREATE TABLE tenant_components (
    id               UUID        PRIMARY KEY,
    tenant_id        BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name             TEXT        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    kind             TEXT        NOT NULL CHECK (kind IN ('bot', 'transform')),
    latest_version   INTEGER     NOT NULL DEFAULT 0,
    -- NULL until a version is activated.
    active_version   INTEGER,
    -- What `rollback` goes back to.
    previous_version INTEGER,
    revision         BIGINT      NOT NULL DEFAULT 1,
    -- Spin's allowed_outbound_hosts syntax (`https://api.example.com`); empty: none.
    allowed_hosts    TEXT[]      NOT NULL DEFAULT '{}',
    -- CPU time one call may use, and the wall-clock time it may take (waiting on HTTP too).
    cpu_time_ms      INTEGER     NOT NULL DEFAULT 100 CHECK (cpu_time_ms BETWEEN 10 AND 2000),
    timeout_ms       INTEGER     NOT NULL DEFAULT 5000 CHECK (timeout_ms BETWEEN 100 AND 30000),
    memory_mb        INTEGER     NOT NULL DEFAULT 32 CHECK (memory_mb BETWEEN 1 AND 128),
    enabled          BOOLEAN     NOT NULL DEFAULT true,
    -- Why nexus disabled it (failures in a row), until it is enabled again.
    disabled_reason  TEXT,
    -- Calls that trapped, broke a limit or reached a forbidden host since the last good one.
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE tenant_component_versions (
    component_id UUID        NOT NULL REFERENCES tenant_components (id) ON DELETE CASCADE,
    version      INTEGER     NOT NULL,
    wasm         BYTEA       NOT NULL,
    sha256       TEXT        NOT NULL,
    size_bytes   INTEGER     NOT NULL,
    -- What the component imports, as the host found it when it accepted the upload.
    imports      TEXT[]      NOT NULL DEFAULT '{}',
    uploaded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component_id, version)
);

-- A bot is either a third-party URL or a tenant component of kind `bot`.
ALTER TABLE bots
    ALTER COLUMN url DROP NOT NULL,
    ADD COLUMN component TEXT,
    ADD CONSTRAINT bots_url_or_component CHECK ((url IS NULL) <> (component IS NULL)),
    ADD CONSTRAINT bots_component FOREIGN KEY (tenant_id, component)
        REFERENCES tenant_components (tenant_id, name) ON UPDATE CASCADE ON DELETE RESTRICT;

-- The transforms of a channel, in the order they run, per direction.
CREATE TABLE channel_transforms (
    channel_id UUID    NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    tenant_id  BIGINT  NOT NULL,
    direction  TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    position   INTEGER NOT NULL,
    component  TEXT    NOT NULL,
    PRIMARY KEY (channel_id, direction, position),
    FOREIGN KEY (tenant_id, component) REFERENCES tenant_components (tenant_id, name)
        ON UPDATE CASCADE ON DELETE RESTRICT
);

CREATE OR REPLACE FUNCTION nexus_bot_json(b bots) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', b.id,
        'name', b.name,
        'nickname', b.nickname,
        'url', b.url,
        'component', b.component,
        'credentialNames', to_jsonb(b.credential_names),
        'responseTimeoutSeconds', b.response_timeout_seconds,
        'enabled', b.enabled,
        'createdAt', nexus_ts(b.created_at),
        'updatedAt', nexus_ts(b.updated_at))
$$;

CREATE FUNCTION nexus_tenant_component_json(c tenant_components) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.id,
        'name', c.name,
        'kind', c.kind,
        'activeVersion', c.active_version,
        'previousVersion', c.previous_version,
        'latestVersion', c.latest_version,
        'revision', c.revision,
        'allowedHosts', to_jsonb(c.allowed_hosts),
        'cpuTimeMs', c.cpu_time_ms,
        'timeoutMs', c.timeout_ms,
        'memoryMb', c.memory_mb,
        'enabled', c.enabled,
        'disabledReason', c.disabled_reason,
        'consecutiveFailures', c.consecutive_failures,
        'createdAt', nexus_ts(c.created_at),
        'updatedAt', nexus_ts(c.updated_at))
$$;
