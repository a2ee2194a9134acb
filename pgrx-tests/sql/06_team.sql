-- Sessions at the gate, permissions as data, and team management (api.invite_user …):
-- what each role may do, and that nothing reaches another tenant.

-- A reauthentication code for a member (the request's user by default), asked for as the
-- edge's /auth/v1/reauthenticate does and read from the email it queues.
CREATE FUNCTION tests.nonce(email text DEFAULT NULL) RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_email text := coalesce(email, (SELECT u.email FROM auth.users u WHERE u.id = crm_private.user_id()));
BEGIN
    PERFORM crm_private.auth_reauthenticate(jsonb_build_object('user', jsonb_build_object(
        'id', tests.user_id(v_email), 'session_id', tests.session(v_email))));
    RETURN (SELECT substring(o.body FROM 'Code: ([0-9]{6})') FROM core.email_outbox o
             WHERE o.recipient = v_email AND o.kind = 'reauthentication' ORDER BY o.id DESC LIMIT 1);
END
$$;
GRANT EXECUTE ON FUNCTION tests.nonce(text) TO PUBLIC;

-- A session that ended (logout, ban, password reset: its row is gone) or went idle past the
-- inactivity timeout (30 days) is refused by the gate, and only that session.
BEGIN;
SELECT tests.seed();
SELECT tests.session('mo@acme.test') IS NOT NULL AND tests.session('ann@acme.test') IS NOT NULL
       AND tests.session('rita@acme.test') IS NOT NULL AS signed_in;
DELETE FROM auth.sessions WHERE user_id = tests.user_id('mo@acme.test');
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('ann@acme.test', 'acme') || jsonb_build_object('session_id', gen_random_uuid()), tests.tenant_id('acme'))$$) AS unknown_session;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('ann@acme.test', 'acme') - 'session_id', tests.tenant_id('acme'))$$) AS no_session;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('ann@acme.test', 'acme') || jsonb_build_object('session_id', tests.session('rita@acme.test')), tests.tenant_id('acme'))$$) AS someone_elses_session;
RESET ROLE;
UPDATE auth.sessions SET updated_at = now() - interval '31 days' WHERE user_id = tests.user_id('ann@acme.test');
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('ann@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS idle_31_days;
SELECT tests.try($$SELECT crm_private.begin_request(tests.claims('rita@acme.test', 'acme'), tests.tenant_id('acme'))$$) AS others_unaffected;
ROLLBACK;

-- Each role's permissions, as loaded by the gate.
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.my_permissions() AS admin;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT api.my_permissions() AS manager;
RESET ROLE;
SELECT tests.login('rita@acme.test', 'acme');
SELECT api.my_permissions() AS rep;
ROLLBACK;

-- Invitations: admins invite any role, managers reps only, reps nobody; an email of
-- another workspace gets 23505; the outbox holds the email (no role may read it).
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT api.invite_user('New.Manager@Acme.test', 'manager') - 'id' - 'created_at' - 'sent_at' - 'expires_at' - 'invited_by' AS admin_invites_manager;
SELECT tests.try($$SELECT api.invite_user('new.manager@acme.test', 'rep')$$) AS pending_twice;
SELECT tests.try($$SELECT api.invite_user('gus@globex.test', 'rep')$$) AS other_workspace;
SELECT tests.try($$SELECT api.invite_user('rita@acme.test', 'rep')$$) AS already_member;
SELECT tests.try($$SELECT api.invite_user('not-an-email', 'rep')$$) AS bad_email;
SELECT tests.try($$SELECT api.invite_user('x@acme.test', 'owner')$$) AS bad_role;
SELECT tests.try($$SELECT count(*) FROM core.email_outbox$$) AS outbox_unreadable;
RESET ROLE;
SELECT kind, recipient, body ~ 'Code: [0-9]{6}' AS has_code, body ~ 'type=invite' AS has_link FROM core.email_outbox ORDER BY id;
SELECT tests.login('mo@acme.test', 'acme');
-- Invitations are never written directly, and their token digests are never read: a written
-- user id or token would open someone else's account.
SELECT tests.try(format($$INSERT INTO core.invitations (tenant_id, email, role, user_id, token_hash, expires_at)
                         VALUES (crm_private.tenant_id(), 'x@acme.test', 'rep', %L, 'abc', now() + interval '1 day')$$,
                        tests.user_id('ann@acme.test'))) AS manager_forges_invitation;
SELECT tests.try($$UPDATE core.invitations SET status = 'pending'$$) AS manager_reopens_invitation;
SELECT tests.try($$SELECT token_hash FROM core.invitations$$) AS manager_reads_token_digest;
SELECT tests.try($$SELECT code_hash FROM core.invitations$$) AS manager_reads_code_digest;
SELECT tests.try($$SELECT api.invite_user('boss@acme.test', 'admin')$$) AS manager_invites_admin;
SELECT tests.try($$SELECT api.invite_user('peer@acme.test', 'manager')$$) AS manager_invites_manager;
SELECT api.invite_user('new.rep@acme.test') ->> 'role' AS manager_invites_rep;
SELECT count(*) AS manager_sees_invitations FROM jsonb_array_elements(api.list_invitations() -> 'data');
RESET ROLE;
SELECT tests.login('rita@acme.test', 'acme');
SELECT tests.try($$SELECT api.invite_user('friend@acme.test', 'rep')$$) AS rep_invites;
SELECT tests.try($$SELECT api.list_invitations()$$) AS rep_lists_invitations;
SELECT tests.try($$SELECT crm_private.invitation_create('friend@acme.test', 'rep')$$) AS rep_calls_the_helper;
SELECT tests.try($$SELECT crm_private.invitation_issue(crm_private.tenant_id(), 'friend@acme.test', 'rep', NULL, NULL)$$) AS rep_calls_the_internal;
RESET ROLE;
-- Another tenant's admin sees none of Acme's invitations and cannot touch them.
SELECT tests.login('gil@globex.test', 'globex');
SELECT jsonb_array_length(api.list_invitations() -> 'data') AS globex_sees;
SELECT tests.try(format('SELECT api.revoke_invitation(%L)', (SELECT id FROM core.invitations WHERE email = 'new.rep@acme.test'))) AS cross_tenant_revoke;
SELECT tests.try(format('SELECT api.resend_invitation(%L)', (SELECT id FROM core.invitations WHERE email = 'new.rep@acme.test'))) AS cross_tenant_resend;
RESET ROLE;
SELECT status FROM core.invitations WHERE email = 'new.rep@acme.test';
-- A manager may resend and revoke rep invitations, not the admin's manager invitation.
SELECT tests.login('mo@acme.test', 'acme');
SELECT tests.try(format('SELECT api.revoke_invitation(%L)', (SELECT id FROM core.invitations WHERE email = 'new.manager@acme.test'))) AS manager_revokes_managers_invite;
SELECT api.resend_invitation((SELECT id FROM core.invitations WHERE email = 'new.rep@acme.test')) ->> 'status' AS manager_resends;
SELECT api.revoke_invitation((SELECT id FROM core.invitations WHERE email = 'new.rep@acme.test')) ->> 'status' AS manager_revokes;
ROLLBACK;

-- Members: anyone lists their own workspace's; only admins change roles and status; the
-- last active admin stays; deactivation ends sessions; nothing crosses tenants.
BEGIN;
SELECT tests.seed();
SELECT tests.session('rita@acme.test') IS NOT NULL AS rita_signed_in;
SELECT tests.login('rita@acme.test', 'acme');
SELECT m ->> 'email' AS email, m ->> 'role' AS role FROM jsonb_array_elements(api.list_members() -> 'data') m ORDER BY 1;
SELECT tests.try(format('SELECT api.set_member_role(%L, %L)', tests.user_id('rita@acme.test'), 'admin')) AS rep_promotes_self;
SELECT tests.try(format('SELECT api.deactivate_member(%L)', tests.user_id('mo@acme.test'))) AS rep_deactivates;
SELECT tests.try($$UPDATE core.memberships SET role = 'admin' WHERE user_id = crm_private.user_id()$$) AS rep_updates_own_role_directly;
SELECT api.update_profile('Rita R.', 'https://img.example/rita.png', 'Sales') - 'joined_at' - 'updated_at' - 'user_id' AS own_profile;
SELECT tests.try($$SELECT api.update_profile(avatar_url => 'javascript:alert(1)')$$) AS bad_avatar;
RESET ROLE;
SELECT tests.login('mo@acme.test', 'acme');
SELECT tests.try(format('SELECT api.set_member_role(%L, %L)', tests.user_id('rita@acme.test'), 'manager')) AS manager_changes_role;
SELECT tests.try(format('SELECT api.reactivate_member(%L)', tests.user_id('rita@acme.test'))) AS manager_reactivates;
RESET ROLE;
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try(format('SELECT api.set_member_role(%L, %L)', tests.user_id('ann@acme.test'), 'manager')) AS last_admin_demoted;
SELECT tests.try(format('SELECT api.deactivate_member(%L, tests.nonce())', tests.user_id('ann@acme.test'))) AS last_admin_deactivated;
SELECT tests.try(format('SELECT api.set_member_role(%L, %L)', tests.user_id('gus@globex.test'), 'admin')) AS cross_tenant_role;
SELECT tests.try(format('SELECT api.deactivate_member(%L, tests.nonce())', tests.user_id('gus@globex.test'))) AS cross_tenant_deactivate;
SELECT tests.try(format('SELECT api.reactivate_member(%L)', tests.user_id('gus@globex.test'))) AS cross_tenant_reactivate;
SELECT tests.try(format('SELECT api.set_member_role(%L, %L)', tests.user_id('rita@acme.test'), 'boss')) AS unknown_role;
SELECT api.deactivate_member(tests.user_id('rita@acme.test'), tests.nonce()) ->> 'status' AS rita;
SELECT api.reactivate_member(tests.user_id('rita@acme.test')) ->> 'status' AS rita_again;
SELECT api.deactivate_member(tests.user_id('rita@acme.test'), tests.nonce()) ->> 'status' AS rita_once_more;
SELECT api.set_member_role(tests.user_id('mo@acme.test'), 'admin') ->> 'role' AS mo;
SELECT api.set_member_role(tests.user_id('ann@acme.test'), 'manager') ->> 'role' AS ann_now_that_mo_is_admin;
RESET ROLE;
SELECT count(*) AS ritas_sessions FROM auth.sessions WHERE user_id = tests.user_id('rita@acme.test');
SELECT m.role, m.status FROM core.memberships m WHERE m.user_id = tests.user_id('gus@globex.test');
ROLLBACK;

-- Keyset pages over the members.
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT jsonb_array_length(api.list_members(2) -> 'data') AS first_page, api.list_members(2) ->> 'next_cursor' IS NOT NULL AS has_next;
SELECT jsonb_array_length(api.list_members(2, api.list_members(2) ->> 'next_cursor') -> 'data') AS second_page,
       api.list_members(2, api.list_members(2) ->> 'next_cursor') ->> 'next_cursor' AS last_cursor;
SELECT tests.try($$SELECT api.list_members(0)$$) AS page_size_0;
SELECT tests.try($$SELECT api.list_members(101)$$) AS page_size_101;
SELECT tests.try($$SELECT api.list_members(10, 'garbage!')$$) AS bad_cursor;
ROLLBACK;

-- Without a tenant context every team function refuses.
BEGIN;
SELECT tests.seed();
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT api.list_members()$$) AS list_members,
       tests.try($$SELECT api.my_permissions()$$) AS my_permissions,
       tests.try($$SELECT api.invite_user('a@b.test')$$) AS invite_user,
       tests.try($$SELECT api.update_profile('x')$$) AS update_profile;
ROLLBACK;

-- The Supabase access token hook adds the active workspace, as GoTrue's contract wants:
-- {claims} back, app_metadata.tenant_id and tenant_role; nothing for a deactivated member.
BEGIN;
SELECT tests.seed();
SELECT (core.custom_access_token_hook(jsonb_build_object(
           'user_id', tests.user_id('mo@acme.test'), 'authentication_method', 'password',
           'claims', jsonb_build_object('sub', tests.user_id('mo@acme.test'), 'aud', 'authenticated', 'role', 'authenticated',
                                        'app_metadata', '{"provider": "email"}'::jsonb))) #> '{claims,app_metadata}') - 'tenant_id' AS hook_claims,
       core.custom_access_token_hook(jsonb_build_object('user_id', tests.user_id('mo@acme.test'), 'claims', '{}'::jsonb))
           #>> '{claims,app_metadata,tenant_id}' = tests.tenant_id('acme')::text AS right_tenant;
SELECT crm_private.set_member_status(tests.tenant_id('acme'), tests.user_id('rita@acme.test'), 'deactivated');
SELECT core.custom_access_token_hook(jsonb_build_object('user_id', tests.user_id('rita@acme.test'),
           'claims', '{"app_metadata": {"tenant_id": "forged", "tenant_role": "admin"}}'::jsonb)) AS deactivated;
ROLLBACK;

-- Removing a member is sensitive (NFR-S8): it takes the caller's own fresh reauthentication
-- code, once. Refused without one, with a wrong, used, expired or someone else's code; the
-- code is asked for at /auth/v1/reauthenticate (crm_auth) and emailed, never stored in clear.
BEGIN;
SELECT tests.seed();
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try(format('SELECT api.deactivate_member(%L)', tests.user_id('rita@acme.test'))) AS without_nonce;
SELECT tests.try(format('SELECT api.deactivate_member(%L, %L)', tests.user_id('rita@acme.test'), '')) AS empty_nonce;
SELECT tests.nonce() ~ '^[0-9]{6}$' AS code_emailed;
RESET ROLE;
SELECT u.reauthentication_token ~ '^[0-9a-f]{64}$' AS digest_stored,
       u.reauthentication_token = (SELECT substring(o.body FROM 'Code: ([0-9]{6})') FROM core.email_outbox o
                                    WHERE o.kind = 'reauthentication' ORDER BY o.id DESC LIMIT 1) AS stored_in_clear
  FROM auth.users u WHERE u.id = tests.user_id('ann@acme.test');
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try(format('SELECT api.deactivate_member(%L, %L)', tests.user_id('rita@acme.test'), '12345x')) AS wrong_nonce;
SELECT tests.nonce('mo@acme.test') AS mos_code \gset
SELECT tests.try(format('SELECT api.deactivate_member(%L, %L)', tests.user_id('rita@acme.test'), :'mos_code')) AS someone_elses_nonce;
SELECT tests.nonce() AS code \gset
SELECT api.deactivate_member(tests.user_id('rita@acme.test'), :'code') ->> 'status' AS with_nonce;
SELECT api.reactivate_member(tests.user_id('rita@acme.test')) ->> 'status' AS reactivated;
SELECT tests.try(format('SELECT api.deactivate_member(%L, %L)', tests.user_id('rita@acme.test'), :'code')) AS used_nonce;
SELECT tests.nonce() AS code \gset
RESET ROLE;
UPDATE auth.users SET reauthentication_sent_at = now() - interval '6 minutes' WHERE id = tests.user_id('ann@acme.test');
SELECT tests.login('ann@acme.test', 'acme');
SELECT tests.try(format('SELECT api.deactivate_member(%L, %L)', tests.user_id('rita@acme.test'), :'code')) AS expired_nonce;
RESET ROLE;
-- Only crm_auth (the edge's /auth/v1) asks for a code.
SET LOCAL ROLE authenticated;
SELECT tests.try($$SELECT crm_private.auth_reauthenticate('{}')$$) AS authenticated_asks;
RESET ROLE;
SET LOCAL ROLE crm_auth;
SELECT crm_private.auth_reauthenticate('{"user": {"id": "00000000-0000-0000-0000-000000000000", "session_id": "00000000-0000-0000-0000-000000000000"}}') #>> '{error,code}' AS no_session;
RESET ROLE;
SELECT kind, recipient, subject FROM core.email_outbox WHERE kind = 'reauthentication' ORDER BY id;
ROLLBACK;
