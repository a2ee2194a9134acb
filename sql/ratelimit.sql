-- Rate limits (PRD NFR-S7): requests per user and minute, shared by every edge.
--
-- The edges count locally and never ask the database per request. About once a second each
-- edge reports its own counts for the current minute (crm_private.rate_limit_sync) and gets
-- back the other edges' counts and the per-tenant limits; it refuses a user whose total has
-- reached the limit. So the limit holds across edges to within what they admit in one sync
-- interval. The default limit is the edge's (AURA_RATE_LIMIT); operators raise or lower it
-- per tenant here.

--------------------------------------------------------------------------------------------
-- crm_private.rate_limits: per-tenant limits set by operators (crm_private.set_rate_limit).
--------------------------------------------------------------------------------------------
CREATE TABLE crm_private.rate_limits (
    tenant_id uuid NOT NULL,
    requests_per_minute integer NOT NULL CHECK (requests_per_minute BETWEEN 1 AND 1000000),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rate_limits_pkey PRIMARY KEY (tenant_id),
    CONSTRAINT rate_limits_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES core.tenants (id) ON DELETE CASCADE
);
COMMENT ON TABLE crm_private.rate_limits IS 'Per-tenant request limits (requests per user and minute) that differ from the edges'' default. Operators write it through crm_private.set_rate_limit.';

--------------------------------------------------------------------------------------------
-- crm_private.rate_usage: each edge's count per subject in the current and the previous
-- minute (older minutes are removed by the next sync).
--------------------------------------------------------------------------------------------
CREATE TABLE crm_private.rate_usage (
    window_start bigint NOT NULL,
    subject text NOT NULL CHECK (pg_catalog.char_length(subject) <= 200),
    edge_id uuid NOT NULL,
    hits integer NOT NULL CHECK (hits >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rate_usage_pkey PRIMARY KEY (window_start, subject, edge_id)
);
COMMENT ON TABLE crm_private.rate_usage IS 'Requests each edge admitted per subject (user) in a minute (window_start: minutes since the epoch), exchanged between edges by crm_private.rate_limit_sync.';

-- No policies: no role but the owner (through the SECURITY DEFINER function) touches these.
ALTER TABLE crm_private.rate_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_private.rate_limits FORCE ROW LEVEL SECURITY;
ALTER TABLE crm_private.rate_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_private.rate_usage FORCE ROW LEVEL SECURITY;
ALTER TABLE crm_private.rate_limits OWNER TO crm_owner;
ALTER TABLE crm_private.rate_usage OWNER TO crm_owner;
SELECT pg_catalog.pg_extension_config_dump('crm_private.rate_limits', '');
SELECT pg_catalog.pg_extension_config_dump('crm_private.rate_usage', '');

CREATE FUNCTION crm_private.set_rate_limit(tenant uuid, requests_per_minute integer) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM core.tenants t WHERE t.id = set_rate_limit.tenant) THEN
        RAISE EXCEPTION 'no such tenant' USING ERRCODE = 'no_data_found', DETAIL = 'field: tenant';
    END IF;
    IF set_rate_limit.requests_per_minute IS NULL THEN
        DELETE FROM crm_private.rate_limits r WHERE r.tenant_id = set_rate_limit.tenant;
    ELSIF set_rate_limit.requests_per_minute NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'invalid requests_per_minute: must be 1 to 1000000, or NULL for the default'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: requests_per_minute';
    ELSE
        INSERT INTO crm_private.rate_limits AS r (tenant_id, requests_per_minute)
        VALUES (set_rate_limit.tenant, set_rate_limit.requests_per_minute)
        ON CONFLICT ON CONSTRAINT rate_limits_pkey
        DO UPDATE SET requests_per_minute = EXCLUDED.requests_per_minute, updated_at = now();
    END IF;
END
$$;
COMMENT ON FUNCTION crm_private.set_rate_limit(uuid, integer) IS 'Operators: the request limit per user and minute for one tenant (1-1000000), or NULL for the edges'' default (AURA_RATE_LIMIT). Edges pick it up within a second.';

CREATE FUNCTION crm_private.rate_limit_sync(edge uuid, window_start bigint, subjects text[], hits integer[])
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF edge IS NULL OR rate_limit_sync.window_start IS NULL
       OR coalesce(array_length(subjects, 1), 0) <> coalesce(array_length(hits, 1), 0) THEN
        RAISE EXCEPTION 'invalid rate limit report: an edge, a window and as many counts as subjects'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Counts only grow within a window: a late report never lowers one.
    INSERT INTO crm_private.rate_usage AS u (window_start, subject, edge_id, hits)
    SELECT rate_limit_sync.window_start, x.subject, edge, x.hits
      FROM unnest(subjects, hits) AS x(subject, hits)
     WHERE x.subject IS NOT NULL AND x.hits > 0
    ON CONFLICT ON CONSTRAINT rate_usage_pkey
    DO UPDATE SET hits = greatest(u.hits, EXCLUDED.hits), updated_at = now();
    DELETE FROM crm_private.rate_usage u WHERE u.window_start < rate_limit_sync.window_start - 1;
    RETURN jsonb_build_object(
        'others', coalesce((SELECT jsonb_object_agg(o.subject, o.n)
                              FROM (SELECT u.subject, sum(u.hits) AS n FROM crm_private.rate_usage u
                                     WHERE u.window_start = rate_limit_sync.window_start AND u.edge_id <> edge
                                     GROUP BY u.subject) o), '{}'::jsonb),
        'limits', coalesce((SELECT jsonb_object_agg(r.tenant_id, r.requests_per_minute)
                              FROM crm_private.rate_limits r), '{}'::jsonb));
END
$$;
COMMENT ON FUNCTION crm_private.rate_limit_sync(uuid, bigint, text[], integer[]) IS 'For the edges (as crm_auth), about once a second: records this edge''s request counts per subject for the minute window_start (minutes since the epoch) and returns {others: {subject: count of the other edges}, limits: {tenant_id: requests_per_minute}}.';
