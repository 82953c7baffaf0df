-- Delivery receipts that arrive before nexus has recorded the far side's id of the message they
-- are about. An aggregator may call back about a send before its own answer to the send has
-- reached nexus (its status callback races the HTTP response); such a receipt is kept here, for
-- an hour and at most 10,000 per channel, and applied when the id is recorded.

CREATE TABLE early_receipts (
    channel_id  UUID        NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    far_id      TEXT        NOT NULL,
    tenant_id   BIGINT      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    status      TEXT        NOT NULL CHECK (status IN ('sent', 'delivered', 'read', 'failed')),
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, far_id)
);

-- The order of delivery states: a receipt never moves a message back.
CREATE FUNCTION nexus_delivery_rank(p_status TEXT) RETURNS INTEGER
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3
                         WHEN 'failed' THEN 4 ELSE 0 END
$$;
