-- A transform may be `required` (compliance: a PII redaction): while it is disabled, or has no
-- active version, the messages of every channel whose chain names it are refused (503) rather
-- than stored without it. A transform that is not required is skipped while disabled.

ALTER TABLE tenant_components ADD COLUMN required BOOLEAN NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION nexus_tenant_component_json(c tenant_components) RETURNS JSONB LANGUAGE sql STABLE AS $$
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
        'required', c.required,
        'disabledReason', c.disabled_reason,
        'consecutiveFailures', c.consecutive_failures,
        'createdAt', nexus_ts(c.created_at),
        'updatedAt', nexus_ts(c.updated_at))
$$;
