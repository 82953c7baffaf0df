-- Secure email (issue 5): a contact's mailbox on a channel of type `securemail`, read and
-- written through a portal the contact center runs (`/nexus/v3/securemail`, an API key with the
-- securemail permission). Each `securebox` (a department) is its own thread with the contact;
-- none is the default box. What agents write there is unread (delivery_status 'accepted')
-- until the portal marks it read.

ALTER TABLE interactions
    ADD COLUMN securebox TEXT CHECK (securebox ~ '^[A-Za-z0-9]{3,16}$');
CREATE INDEX interactions_mailbox ON interactions (tenant_id, contact_id, securebox, created_at)
    WHERE media = 'securemail';
