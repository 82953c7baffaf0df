-- The example component's notes (components/example, route /example/notes): the table the
-- platform's end-to-end tests write to and read back through the postgres capability.
CREATE TABLE example_notes (
    id         BIGSERIAL PRIMARY KEY,
    body       TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
