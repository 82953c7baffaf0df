-- Suppression imports read as they arrive (`POST /nexus/v3/outbound/suppressions/import`), a
-- batch at a time, however long the file. A line with the address and scope of an earlier line
-- of the same file is refused, naming that line; the earlier lines are no longer held in the
-- component's memory, so each suppression remembers the import (and the line) that last wrote
-- it, and a later batch finds them with the suppression's own unique index.
ALTER TABLE suppressions ADD COLUMN import_id UUID, ADD COLUMN import_line BIGINT;
