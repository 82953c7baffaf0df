-- Succeeded jobs are kept for a while (the jobs API shows what was sent and how it went) and
-- then deleted, with their attempts: their payloads hold what customers and agents wrote, which
-- should not outlive its use. Dead jobs stay until replayed or deleted with their tenant: they
-- are what an operator has to look at.
CREATE INDEX jobs_succeeded ON jobs (component, finished_at) WHERE state = 'succeeded';

-- Deletes up to `p_limit` jobs of `p_component` that succeeded more than `p_older_than_ms` ago;
-- how many. Safe on every host at once (SKIP LOCKED).
CREATE FUNCTION nexus_prune_jobs(p_component TEXT, p_older_than_ms BIGINT, p_limit INTEGER)
RETURNS INTEGER LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM jobs WHERE id IN (
            SELECT id FROM jobs
            WHERE component = p_component AND state = 'succeeded'
              AND finished_at < now() - make_interval(secs => p_older_than_ms / 1000.0)
            ORDER BY finished_at LIMIT p_limit
            FOR UPDATE SKIP LOCKED)
        RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;
