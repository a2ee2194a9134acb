-- bench/seed.sql: the benchmark data set, generated set-based inside the database.
--
--   psql -v tenants=1000 -v big_contacts=200000 -v big_orgs=40000 -v big_deals=100000 \
--        -v big_activities=400000 -v small_contacts=300 -f bench/seed.sql
--
-- Run as a superuser on a database with pg_crm (scripts/seed.sh does this for `make seed`).
-- Deterministic: the same parameters give the same tenants, people, names, emails, phones,
-- custom field values and sizes (row ids are derived from the tenant's slug and the row's
-- number, so they are the same on every run too; only tenant and user ids are random).
-- Idempotent: a tenant whose slug exists already is skipped, so a second run adds nothing.
--
-- Tenant 1 ("seed-big") is the big one. Tenants 2..N are skewed around small_contacts:
-- every 50th has 10x as many, every 10th 3x, the rest between 1/3x and 5/3x. Each tenant
-- has an admin, managers and reps (1 + n/20000 managers, at most 5; 2 + n/250 reps, at most 50), three
-- custom fields (a select and a url on contacts, a boolean on deals), organizations
-- (one per five contacts), deals (one per two contacts) at every stage, and activities
-- (four per deal in the big tenant, two elsewhere). Every row goes in through the tenant's
-- own request context (crm_private.begin_request as its admin) and every trigger: stage
-- rules and history, owners, custom field validation. One transaction per tenant.
\set ON_ERROR_STOP on
SELECT set_config('seed.tenants', :'tenants', false),
       set_config('seed.big_contacts', :'big_contacts', false),
       set_config('seed.big_orgs', :'big_orgs', false),
       set_config('seed.big_deals', :'big_deals', false),
       set_config('seed.big_activities', :'big_activities', false),
       set_config('seed.small_contacts', :'small_contacts', false) \gset

CREATE SCHEMA IF NOT EXISTS aura_seed;

-- Deterministic names: first names, syllables for last names and companies.
CREATE OR REPLACE FUNCTION aura_seed.first_name(i bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT (ARRAY['Anna','Ben','Carla','Dmitri','Elena','Farid','Greta','Hugo','Ines','Jonas',
                  'Kira','Liam','Mona','Nils','Olga','Pavel','Quinn','Rosa','Sven','Tara',
                  'Uma','Viktor','Wanda','Xaver','Yara','Zoltan','Amir','Bea','Cem','Dana',
                  'Emil','Fatima','Goran','Hana','Ivo','Julia','Kai','Lena','Mateo','Nora',
                  'Oskar','Priya','Rafael','Sofia','Tomas','Ulla','Vera','Wei','Yusuf','Zara'])[1 + (i % 50)::int]
$$;
CREATE OR REPLACE FUNCTION aura_seed.last_name(i bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT initcap((ARRAY['ber','kov','mar','sten','wal','hof','lin','dor','gar','mil','ros','tan','bel','car','fen','hal'])[1 + (i % 16)::int]
                || (ARRAY['son','ski','mann','berg','ez','ini','ova','sen','er','ic','as','ley','ford','ton','ari','ek'])[1 + ((i / 16) % 16)::int])
$$;
CREATE OR REPLACE FUNCTION aura_seed.company(i bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT initcap((ARRAY['ber','kov','mar','sten','wal','hof','lin','dor','gar','mil'])[1 + (i % 10)::int]
                || (ARRAY['an','ix','or','el','um','ax','id','on','ar','ex'])[1 + ((i / 10) % 10)::int]
                || (ARRAY['tec','via','dyn','lux','gen','tor','mon','sys','nova','core'])[1 + ((i / 100) % 10)::int])
        || ' ' || (ARRAY['Labs','Holdings','Group','Systems','Foods','Motors','Media','Energy','Logistics','Partners'])[1 + ((i / 1000) % 10)::int]
        || CASE WHEN i >= 10000 THEN ' ' || (i / 10000)::text ELSE '' END
$$;
-- How many contacts tenant k has (k = 1 is the big one).
CREATE OR REPLACE FUNCTION aura_seed.contacts_of(k integer) RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN k = 1 THEN current_setting('seed.big_contacts')::integer
        WHEN k % 50 = 0 THEN s * 10
        WHEN k % 10 = 0 THEN s * 3
        ELSE greatest(s / 3 + (hashint4(k) & 2147483647) % greatest(s * 4 / 3, 1), 1)
    END FROM (SELECT current_setting('seed.small_contacts')::integer AS s) p
$$;
CREATE OR REPLACE FUNCTION aura_seed.slug(k integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN k = 1 THEN 'seed-big' ELSE 'seed-' || lpad(k::text, 4, '0') END
$$;
-- A uuid derived from a name: the same on every run.
CREATE OR REPLACE FUNCTION aura_seed.id(slug text, kind text, i bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT md5(slug || ':' || kind || ':' || i)::uuid
$$;

-- The tenants, their members and custom fields: one transaction per tenant.
DO $seed$
<<seed>>
DECLARE
    n_tenants integer := current_setting('seed.tenants')::integer;
    k integer;
    slug text;
    made jsonb;
    tenant uuid;
    admin_id uuid;
    contacts integer;
    managers integer;
    reps integer;
    j integer;
    started timestamptz := clock_timestamp();
BEGIN
    FOR k IN 1 .. n_tenants LOOP
        slug := aura_seed.slug(k);
        CONTINUE WHEN EXISTS (SELECT FROM core.tenants t WHERE t.slug = seed.slug);
        contacts := aura_seed.contacts_of(k);
        managers := 1 + least(contacts / 20000, 4);
        reps := least(2 + contacts / 250, 50);
        made := crm_private.create_tenant(
            aura_seed.company(k * 37) || CASE WHEN k = 1 THEN ' (big)' ELSE '' END,
            slug, 'admin@' || slug || '.example', aura_seed.first_name(k) || ' ' || aura_seed.last_name(k));
        tenant := (made ->> 'tenant_id')::uuid;
        admin_id := (made ->> 'admin_user_id')::uuid;
        FOR j IN 1 .. managers LOOP
            PERFORM crm_private.add_member(tenant, 'manager' || j || '@' || slug || '.example', 'manager',
                                           aura_seed.first_name(k + j * 7) || ' ' || aura_seed.last_name(k * 3 + j));
        END LOOP;
        FOR j IN 1 .. reps LOOP
            PERFORM crm_private.add_member(tenant, 'rep' || j || '@' || slug || '.example', 'rep',
                                           aura_seed.first_name(k + j * 13) || ' ' || aura_seed.last_name(k * 5 + j));
        END LOOP;
        PERFORM crm_private.begin_request(
            jsonb_build_object('sub', admin_id, 'role', 'authenticated',
                               'session_id', crm_private.create_session(admin_id)),
            tenant);
        INSERT INTO core.custom_fields (entity, key, label, type, options)
        VALUES ('contact', 'lead_source', 'Lead source', 'select', '["Web", "Referral", "Event", "Partner", "Outbound"]'),
               ('contact', 'linkedin', 'LinkedIn', 'url', '[]'),
               ('deal', 'budget_confirmed', 'Budget confirmed', 'boolean', '[]');
        COMMIT;
    END LOOP;
    RAISE NOTICE 'tenants and members: % s', round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
END
$seed$;

-- The records, tenant by tenant, in each tenant's request context.
DO $seed$
DECLARE
    t record;
    n_contacts integer;
    n_orgs integer;
    n_deals integer;
    n_activities integer;
    rep_ids uuid[];
    started timestamptz := clock_timestamp();
BEGIN
    FOR t IN
        SELECT tn.id, tn.slug, k, m.user_id AS admin_id
          FROM generate_series(1, current_setting('seed.tenants')::integer) k
          JOIN core.tenants tn ON tn.slug = aura_seed.slug(k)
          JOIN core.memberships m ON m.tenant_id = tn.id AND m.role = 'admin'
         WHERE NOT EXISTS (SELECT FROM crm.organizations o WHERE o.tenant_id = tn.id)
         ORDER BY k
    LOOP
        n_contacts := aura_seed.contacts_of(t.k);
        IF t.slug = 'seed-big' THEN
            n_orgs := current_setting('seed.big_orgs')::integer;
            n_deals := current_setting('seed.big_deals')::integer;
            n_activities := current_setting('seed.big_activities')::integer;
        ELSE
            n_orgs := greatest(n_contacts / 5, 1);
            n_deals := n_contacts / 2;
            n_activities := n_deals * 2;
        END IF;
        SELECT array_agg(m.user_id ORDER BY u.email) INTO rep_ids
          FROM core.memberships m JOIN auth.users u ON u.id = m.user_id
         WHERE m.tenant_id = t.id AND m.role = 'rep';
        PERFORM crm_private.begin_request(
            jsonb_build_object('sub', t.admin_id, 'role', 'authenticated',
                               'session_id', crm_private.create_session(t.admin_id)),
            t.id);

        INSERT INTO crm.organizations (tenant_id, id, name, industry, size, location, website)
        SELECT t.id, aura_seed.id(t.slug, 'o', i), aura_seed.company(i),
               (ARRAY['Software','Retail','Energy','Health','Finance','Manufacturing','Education','Logistics'])[1 + i % 8],
               (ARRAY['1-10','11-50','51-200','201-500','501-1000','1001-5000','5001+'])[1 + (i * 7) % 7],
               (ARRAY['Berlin','Lisbon','Austin','Toronto','Nairobi','Sydney','Osaka','Chicago'])[1 + (i / 3) % 8],
               'https://www.' || lower(replace(aura_seed.company(i), ' ', '-')) || '.example'
          FROM generate_series(1, n_orgs) i;

        -- Reps own contacts unevenly (the first reps more): rep index from a square.
        INSERT INTO crm.contacts (tenant_id, id, first_name, last_name, email, phone, title,
                                  organization_id, assigned_to, custom_fields)
        SELECT t.id, aura_seed.id(t.slug, 'c', i), aura_seed.first_name(i), aura_seed.last_name(i / 50),
               lower(aura_seed.first_name(i)) || '.' || lower(aura_seed.last_name(i / 50)) || i || '@'
                   || lower(replace(aura_seed.company(i % n_orgs + 1), ' ', '-')) || '.example',
               '+1 (' || lpad((200 + i % 700)::text, 3, '0') || ') ' || lpad(((i * 37) % 1000)::text, 3, '0')
                   || '-' || lpad((i % 10000)::text, 4, '0'),
               (ARRAY['CEO','CTO','Head of Sales','Buyer','Procurement Lead','Engineer','Office Manager','VP Marketing'])[1 + i % 8],
               CASE WHEN i % 10 < 7 THEN aura_seed.id(t.slug, 'o', i % n_orgs + 1) END,
               rep_ids[1 + floor(array_length(rep_ids, 1) * power(((i * 7919) % 1000) / 1000.0, 1.6))::int],
               jsonb_build_object('lead_source', (ARRAY['Web','Referral','Event','Partner','Outbound'])[1 + i % 5])
                   || CASE WHEN i % 3 = 0 THEN jsonb_build_object('linkedin', 'https://www.linkedin.com/in/p' || i) ELSE '{}' END
          FROM generate_series(1, n_contacts) i;

        INSERT INTO crm.deals (tenant_id, id, name, amount, currency, stage, expected_close_date, contact_id,
                               organization_id, assigned_to, lost_reason, custom_fields)
        SELECT t.id, aura_seed.id(t.slug, 'd', i),
               aura_seed.company(i % n_orgs + 1) || ' — ' || (ARRAY['renewal','expansion','pilot','licences','services'])[1 + i % 5],
               ((i * 7919) % 500) * 100 + 1000, (ARRAY['USD','USD','EUR','GBP'])[1 + i % 4],
               (ARRAY['prospect','prospect','qualified','qualified','proposal','negotiation','won','lost'])[1 + i % 8],
               DATE '2026-01-01' + (i % 730)::integer,
               c.id, c.organization_id, c.assigned_to,
               CASE WHEN i % 8 = 7 THEN (ARRAY['Budget','Timing','Competitor','No decision'])[1 + i % 4] END,
               jsonb_build_object('budget_confirmed', i % 3 = 0)
          FROM generate_series(1, n_deals) i
          JOIN crm.contacts c ON c.tenant_id = t.id AND c.id = aura_seed.id(t.slug, 'c', (i * 2 - 1) % n_contacts + 1);

        INSERT INTO crm.activities (tenant_id, type, description, occurred_at, actor_id, contact_id, deal_id)
        SELECT t.id, (ARRAY['call','email','meeting','note'])[1 + a % 4],
               (ARRAY['Call about ','Sent the proposal for ','Meeting on ','Note on '])[1 + a % 4] || d.name,
               TIMESTAMPTZ '2026-01-01 09:00+00' + make_interval(hours => (a * 37) % 8000),
               d.assigned_to, d.contact_id, d.id
          FROM generate_series(0, n_activities - 1) a
          JOIN crm.deals d ON d.tenant_id = t.id AND d.id = aura_seed.id(t.slug, 'd', a % n_deals + 1);
        COMMIT;
    END LOOP;
    RAISE NOTICE 'records: % s', round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
END
$seed$;

ANALYZE;
DROP SCHEMA aura_seed CASCADE;
