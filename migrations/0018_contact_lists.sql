-- The contact lists of a tenant's outbound campaigns (`/nexus/v3/outbound/lists`), filled by
-- CSV uploads (`nexus_guest::contacts`).
CREATE TABLE contact_lists (
    id                    UUID        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id             BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                  TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The calling code of the numbers written without one (`1`, `44`).
    default_calling_code  TEXT        CHECK (default_calling_code ~ '^[1-9][0-9]{0,2}$'),
    -- The variable columns its uploads have had, in the order first seen.
    variables             TEXT[]      NOT NULL DEFAULT '{}',
    contact_count         BIGINT      NOT NULL DEFAULT 0,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX contact_lists_tenant ON contact_lists (tenant_id, created_at);

-- One per person of a list (not `contacts`, the people of conversations): a client id (the tenant's own key), an E.164 phone number and/or a
-- lower-case email address, each at most once per list, so that no one is messaged twice.
CREATE TABLE list_contacts (
    id                BIGSERIAL   PRIMARY KEY,
    list_id           UUID        NOT NULL REFERENCES contact_lists (id) ON DELETE CASCADE,
    client_id         TEXT        NOT NULL CHECK (length(client_id) BETWEEN 1 AND 200),
    phone             TEXT        CHECK (phone ~ '^\+[0-9]{8,15}$'),
    email             TEXT        CHECK (length(email) <= 320),
    -- An IANA zone, from the list's column or the number; none takes the campaign's default.
    time_zone         TEXT,
    time_zone_source  TEXT        CHECK (time_zone_source IN ('column', 'number')),
    variables         JSONB       NOT NULL DEFAULT '{}',
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (phone IS NOT NULL OR email IS NOT NULL),
    CHECK ((time_zone IS NULL) = (time_zone_source IS NULL))
);
CREATE UNIQUE INDEX list_contacts_client ON list_contacts (list_id, client_id);
CREATE UNIQUE INDEX list_contacts_phone ON list_contacts (list_id, phone) WHERE phone IS NOT NULL;
CREATE UNIQUE INDEX list_contacts_email ON list_contacts (list_id, email) WHERE email IS NOT NULL;

-- A contact as the API shows it.
CREATE FUNCTION nexus_list_contact_json(c list_contacts) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'clientId', c.client_id,
        'phone', c.phone,
        'email', c.email,
        'timeZone', c.time_zone,
        'timeZoneSource', c.time_zone_source,
        'variables', c.variables,
        'createdAt', nexus_ts(c.created_at))
$$;

-- A list as the API shows it.
CREATE FUNCTION nexus_contact_list_json(l contact_lists) RETURNS JSONB LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', l.id,
        'name', l.name,
        'defaultCallingCode', l.default_calling_code,
        'variables', to_jsonb(l.variables),
        'contacts', l.contact_count,
        'createdAt', nexus_ts(l.created_at),
        'updatedAt', nexus_ts(l.updated_at))
$$;
