-- api.update_workspace and the operator functions: values, errors, partial updates.
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.update_workspace(name => '  Acme Incorporated  ', logo_url => 'https://cdn.acme.test/logo.png',
                            industry => 'Manufacturing', timezone => 'Europe/Berlin')
       - 'id' - 'created_at' - 'updated_at' AS updated;
-- Omitted arguments keep their value; '' clears the optional ones.
SELECT api.update_workspace(industry => '') - 'id' - 'created_at' - 'updated_at' AS industry_cleared;
SELECT api.update_workspace() ->> 'name' AS unchanged;
SELECT tests.try($$SELECT api.update_workspace(name => '')$$) AS empty_name;
SELECT tests.try($$SELECT api.update_workspace(name => repeat('x', 201))$$) AS long_name;
SELECT tests.try($$SELECT api.update_workspace(logo_url => 'javascript:alert(1)')$$) AS bad_logo;
SELECT tests.try($$SELECT api.update_workspace(timezone => 'Mars/Olympus_Mons')$$) AS unknown_zone;
SELECT tests.try($$SELECT api.update_workspace(timezone => 'Europe/Berlin''; DROP TABLE core.tenants; --')$$) AS injected_zone;
SELECT tests.try($$SELECT api.update_workspace(industry => repeat('y', 101))$$) AS long_industry;
-- A failed update changed nothing.
SELECT api.get_workspace() - 'id' - 'created_at' - 'updated_at' AS after_failures;
-- URLs are parsed, not pattern-matched: web schemes with a host, no userinfo, nothing that
-- breaks out of markup, at most 2048 characters; stored normalised.
SELECT left(u, 60) AS url, tests.try(format('SELECT api.update_workspace(logo_url => %L)', u)) AS result
FROM unnest(ARRAY[
    'https://x.test/"><script>alert(1)</script>',
    'https://x.test/''onload=''x',
    'https://x.test/<b>',
    'https://x.test\@evil.test/',
    'https://a@evil.test/',
    'https://bank.test:pw@evil.test/',
    'ftp://x.test/logo.png',
    'data:text/html,hi',
    '//x.test/logo.png',
    'https://x.test/ a',
    'https://x.test/' || repeat('a', 2048)
]) AS u;
SELECT u AS url, api.update_workspace(logo_url => u) ->> 'logo_url' AS stored
FROM unnest(ARRAY['HTTPS://CDN.Acme.test:443/a/../logo.png', 'https://bücher.example/logo.png?v=2#top']) AS u;
-- Time zones: IANA names in any case, stored in IANA spelling; server-dependent names and
-- POSIX rule strings are refused.
SELECT tz AS zone, api.update_workspace(timezone => tz) ->> 'timezone' AS stored
FROM unnest(ARRAY['europe/berlin', 'America/Argentina/Buenos_Aires', 'Etc/GMT+5', 'US/Pacific', 'UTC']) AS tz;
SELECT tz AS zone, tests.try(format('SELECT api.update_workspace(timezone => %L)', tz)) AS result
FROM unnest(ARRAY['localtime', 'posixrules', 'Factory', 'posix/Europe/Berlin', 'right/UTC', 'EST5', '<+03>-3', 'UTC+3']) AS tz;
-- The stamps are the database's: updated_by is the caller, created_* untouched.
RESET ROLE;
SELECT t.updated_by = tests.user_id('ann@acme.test') AS updated_by_ann, t.created_by IS NULL AS created_by_operator,
       t.updated_at >= t.created_at AS stamps_ordered
FROM core.tenants t WHERE slug = 'acme';
ROLLBACK;

-- Operator functions refuse bad input with a clear error.
BEGIN;
SELECT tests.seed();
SELECT tests.try($$SELECT crm_private.create_tenant('Acme again', 'acme', 'x@y.test')$$) AS duplicate_slug;
SELECT tests.try($$SELECT crm_private.create_tenant('Bad', 'Bad Slug', 'x@y.test')$$) AS bad_slug;
SELECT tests.try($$SELECT crm_private.create_tenant('Bad', 'bad', 'not-an-email')$$) AS bad_email;
SELECT tests.try($$SELECT crm_private.create_tenant('Bad', 'bad', 'x@y.test', NULL, 'Nowhere/Town')$$) AS bad_zone;
SELECT tests.try($$SELECT crm_private.add_member(tests.tenant_id('acme'), 'mo@acme.test', 'rep')$$) AS already_member;
SELECT tests.try($$SELECT crm_private.add_member(tests.tenant_id('acme'), 'new@acme.test', 'owner')$$) AS bad_role;
SELECT tests.try($$SELECT crm_private.add_member(gen_random_uuid(), 'new@acme.test', 'rep')$$) AS no_tenant;
SELECT tests.try($$SELECT crm_private.suspend_tenant(gen_random_uuid())$$) AS suspend_unknown;
SELECT tests.try($$SELECT crm_private.set_member_status(tests.tenant_id('acme'), tests.user_id('mo@acme.test'), 'gone')$$) AS bad_status;
-- The table refuses what the api refuses, for DBAs writing directly too.
SELECT tests.try($$UPDATE core.tenants SET logo_url = 'https://x.test/"><b>' WHERE slug = 'acme'$$) AS dba_writes_bad_logo;
SELECT tests.try($$UPDATE core.tenants SET logo_url = 'javascript:alert(1)' WHERE slug = 'acme'$$) AS dba_writes_script_url;
-- An existing account joins a second tenant without a second auth.users row.
SELECT crm_private.add_member(tests.tenant_id('globex'), 'MO@acme.test', 'rep') = tests.user_id('mo@acme.test') AS same_user;
SELECT count(*) AS users FROM auth.users;
ROLLBACK;
