-- Every privilege pg_crm grants, in one place. Nothing is granted by default: PUBLIC loses
-- everything first, then each role gets exactly what it needs, by name. The regression
-- suite (pgrx-tests/sql/grants.sql) proves the result from a low-privilege role.

REVOKE ALL ON SCHEMA core, crm, crm_private, api FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA core, crm FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA core, crm_private, api FROM PUBLIC;
-- ...and functions later upgrade scripts add start without PUBLIC's EXECUTE too.
ALTER DEFAULT PRIVILEGES IN SCHEMA core, crm, crm_private, api REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- crm_owner owns the tables; foreign-key checks and cascades run as a table's owner (a
-- tenant's deletion cascades to crm_private.rate_limits).
GRANT USAGE ON SCHEMA core, crm, crm_private TO crm_owner;

-- authenticated: the role every edge request runs as (SET LOCAL ROLE), after
-- crm_private.begin_request has set its tenant context.
GRANT USAGE ON SCHEMA api, core, crm, crm_private TO authenticated;

GRANT SELECT ON core.tenants TO authenticated;
GRANT SELECT ON core.roles, core.permissions, core.role_permissions TO authenticated;
GRANT UPDATE (role, status, display_name, avatar_url, department) ON core.memberships TO authenticated;
-- Every column but the token digests; no writes (the SECURITY DEFINER functions write).
GRANT SELECT (tenant_id, id, email, role, user_id, invited_by, status, expires_at, sent_at, accepted_at,
              created_at, updated_at, created_by, updated_by) ON core.invitations TO authenticated;
GRANT UPDATE (name, logo_url, industry, timezone) ON core.tenants TO authenticated;
GRANT SELECT ON core.memberships TO authenticated;

-- The CRM (crm_schema.sql): reads and writes as row-level security allows, on the columns a
-- caller may set (stamps, owner columns, history and activities' content are the
-- database's). No DELETE anywhere: records are soft-deleted; activities are never updated.
GRANT SELECT, DELETE ON core.custom_fields TO authenticated;
GRANT INSERT (tenant_id, entity, key, label, type, required, options) ON core.custom_fields TO authenticated;
GRANT UPDATE (label, required, options) ON core.custom_fields TO authenticated;
GRANT SELECT ON crm.pipeline_stages, crm.deal_stage_changes, crm.assignment_changes, crm.deal_totals TO authenticated;
GRANT SELECT ON crm.organizations, crm.contacts, crm.deals, crm.activities TO authenticated;
GRANT INSERT (tenant_id, name, industry, size, location, website, parent_id, custom_fields) ON crm.organizations TO authenticated;
GRANT UPDATE (name, industry, size, location, website, parent_id, custom_fields, deleted_at) ON crm.organizations TO authenticated;
GRANT INSERT (tenant_id, first_name, last_name, email, phone, title, organization_id, assigned_to, custom_fields)
    ON crm.contacts TO authenticated;
GRANT UPDATE (first_name, last_name, email, phone, title, organization_id, assigned_to, custom_fields, merged_into, deleted_at)
    ON crm.contacts TO authenticated;
GRANT INSERT (tenant_id, name, amount, currency, stage, probability, expected_close_date, lost_reason, contact_id,
              organization_id, assigned_to, notes, custom_fields) ON crm.deals TO authenticated;
GRANT UPDATE (name, amount, currency, stage, probability, expected_close_date, closed_at, lost_reason, contact_id,
              organization_id, assigned_to, notes, custom_fields, deleted_at) ON crm.deals TO authenticated;
GRANT INSERT (tenant_id, type, description, occurred_at, actor_id, contact_id, deal_id) ON crm.activities TO authenticated;

GRANT EXECUTE ON FUNCTION
    crm_private.begin_request(jsonb, uuid),
    crm_private.tenant_id(),
    crm_private.user_id(),
    crm_private.tenant_role(),
    crm_private.workspace_json(core.tenants),
    crm_private.current_user_email(),
    crm_private.update_workspace(text, text, text, text),
    api.whoami(),
    api.get_workspace(),
    api.update_workspace(text, text, text, text),
    crm_private.has_permission(text),
    crm_private.require_permission(text),
    crm_private.require_reauthentication(text),
    crm_private.page_size(integer),
    crm_private.encode_cursor(timestamptz, uuid),
    crm_private.decode_cursor(text),
    crm_private.normalize_email(text),
    crm_private.member_email(uuid),
    crm_private.member_json(core.memberships),
    crm_private.require_invite_right(text),
    crm_private.invitation_create(text, text),
    crm_private.invitation_change(uuid, boolean),
    crm_private.change_member(uuid, text, text),
    api.invite_user(text, text),
    api.list_invitations(integer, text),
    api.resend_invitation(uuid),
    api.revoke_invitation(uuid),
    api.list_members(integer, text),
    api.set_member_role(uuid, text),
    api.deactivate_member(uuid, text),
    api.reactivate_member(uuid),
    api.update_profile(text, text, text),
    api.my_permissions(),
    -- the CRM
    crm_private.first_visible_assignee(),
    crm_private.last_visible_assignee(),
    crm_private.sees_either(uuid, uuid),
    crm_private.currency_known(text),
    crm_private.phone_digits(text),
    crm_private.fields_check(text, text, jsonb),
    crm_private.custom_field_definition(text, text, text, boolean, jsonb),
    crm_private.contact_duplicate(text, text, text, text, uuid, text, text, text, text, uuid),
    crm_private.organization_duplicate(text, text, text, text),
    crm_private.make_cursor(text, text, text, uuid),
    crm_private.read_cursor(text, text, text),
    crm_private.time_key(timestamptz),
    crm_private.bad_sort(text[]),
    crm_private.not_found(text, text),
    crm_private.require_assignee(uuid),
    crm_private.organization_json(crm.organizations),
    crm_private.contact_json(crm.contacts),
    crm_private.deal_json(crm.deals),
    crm_private.activity_json(crm.activities),
    crm_private.custom_field_json(core.custom_fields),
    crm_private.require_organization(uuid, text),
    crm_private.require_contact(uuid, text),
    crm_private.require_deal(uuid, text),
    crm_private.require_stage(text),
    crm_private.require_entity(text),
    crm_private.contact_with_email(text, uuid),
    crm_private.require_unique_email(text, uuid),
    crm_private.contact_duplicates(text, text, text, text, uuid, uuid),
    crm_private.contact_search(text, text, text, numeric, uuid, integer),
    crm_private.organization_duplicates(text, text, uuid),
    crm_private.set_organization_deleted(uuid, boolean),
    crm_private.set_contact_deleted(uuid, boolean),
    crm_private.set_deal_deleted(uuid, boolean),
    crm_private.move_activities(uuid, uuid),
    crm_private.archive_activity(uuid),
    api.create_organization(text, text, text, text, text, uuid, jsonb),
    api.get_organization(uuid),
    api.list_organizations(uuid, uuid, text, boolean, integer, text),
    api.update_organization(uuid, jsonb),
    api.delete_organization(uuid),
    api.restore_organization(uuid),
    api.create_contact(text, text, text, text, text, uuid, uuid, jsonb),
    api.get_contact(uuid),
    api.list_contacts(uuid, uuid, text, boolean, integer, text),
    api.search_contacts(text, integer, text),
    api.update_contact(uuid, jsonb),
    api.assign_contact(uuid, uuid),
    api.delete_contact(uuid),
    api.restore_contact(uuid),
    api.find_duplicate_contacts(uuid, text, text, text, text, uuid),
    api.merge_contacts(uuid, uuid),
    api.create_deal(text, numeric, text, text, integer, date, uuid, uuid, uuid, text, jsonb),
    api.get_deal(uuid),
    api.list_deals(text, uuid, uuid, uuid, integer, integer, date, date, text, boolean, integer, text),
    api.update_deal(uuid, jsonb),
    api.move_deal(uuid, text, text, integer),
    api.reopen_deal(uuid, text, integer),
    api.assign_deal(uuid, uuid),
    api.delete_deal(uuid),
    api.restore_deal(uuid),
    api.deal_stage_history(uuid, integer, text),
    api.list_pipeline_stages(),
    api.pipeline_summary(),
    api.log_activity(text, text, timestamptz, uuid, uuid),
    api.list_activities(uuid, uuid, boolean, integer, text),
    api.archive_activity(uuid),
    api.define_custom_field(text, text, text, text, boolean, jsonb),
    api.list_custom_fields(text),
    api.delete_custom_field(text, text),
    -- the audit log, security events and the access log
    crm_private.verify_current_audit_log(),
    crm_private.log_access(text, text, uuid, jsonb),
    crm_private.note_missing(text, uuid),
    crm_private.not_found(text, text, uuid),
    api.list_audit_events(uuid, text, text, text, timestamptz, timestamptz, integer, text),
    api.verify_audit_log(),
    api.list_security_events(text, uuid, timestamptz, timestamptz, integer, text),
    api.list_access_events(uuid, text, uuid, timestamptz, timestamptz, integer, text),
    -- workspace settings and deletion
    crm_private.pending_deletion_tenant(),
    crm_private.settings_json(core.tenants),
    crm_private.workspace_settings(),
    crm_private.cancel_pending_deletion(),
    crm_private.request_current_deletion(),
    api.get_workspace_settings(),
    api.update_workspace_settings(jsonb),
    api.request_workspace_deletion(text),
    api.cancel_workspace_deletion(),
    -- data in and out
    crm_private.export_begin(text, text),
    crm_private.contact_export(uuid),
    crm_private.contact_erase(uuid, text),
    api.export_contact(uuid),
    api.erase_contact(uuid, text),
    crm_private.import_targets(text, text[], jsonb),
    crm_private.import_targets_checked(text, text[], jsonb),
    crm_private.import_row(text, jsonb, jsonb, text[]),
    crm_private.import_begin(text, text[], jsonb),
    crm_private.import_run(text, text[], jsonb, jsonb),
    crm_private.import_note_probes(text, uuid[]),
    crm_private.import_audit(text)
TO authenticated;
-- An import keeps the ids of the records it creates (references between its files
-- survive), and brings records deleted in the source back deleted.
GRANT INSERT (id, deleted_at) ON crm.organizations, crm.contacts TO authenticated;
GRANT SELECT ON core.audit_log, core.security_events, core.access_events TO authenticated;
GRANT UPDATE (retention_policy, access_log, audit_retention_months, deletion_grace_days) ON core.tenants TO authenticated;

-- crm_auth: the role the edge's /auth/v1 endpoints run as (SET LOCAL ROLE crm_auth). It
-- reaches auth.* only through these SECURITY DEFINER functions, and nothing else.
GRANT USAGE ON SCHEMA crm_private TO crm_auth;
GRANT EXECUTE ON FUNCTION
    crm_private.auth_signup(jsonb),
    crm_private.auth_token_password(jsonb),
    crm_private.auth_token_refresh(jsonb),
    crm_private.auth_logout(jsonb),
    crm_private.auth_user_get(jsonb),
    crm_private.auth_user_update(jsonb),
    crm_private.auth_recover(jsonb),
    crm_private.auth_reauthenticate(jsonb),
    crm_private.auth_verify(jsonb),
    crm_private.auth_invite(jsonb),
    crm_private.auth_admin_list_users(jsonb),
    crm_private.auth_admin_get_user(jsonb),
    crm_private.auth_admin_create_user(jsonb),
    crm_private.auth_admin_update_user(jsonb),
    crm_private.auth_admin_delete_user(jsonb),
    crm_private.auth_settings_public(jsonb),
    crm_private.auth_redirect_target(jsonb),
    crm_private.outbox_claim(integer, integer),
    crm_private.outbox_sent(bigint),
    crm_private.outbox_failed(bigint, text),
    crm_private.rate_limit_sync(uuid, bigint, text[], integer[])
TO crm_auth;

-- On Supabase, GoTrue calls the access token hook as supabase_auth_admin.
DO $hook$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'supabase_auth_admin') THEN
        GRANT USAGE ON SCHEMA core TO supabase_auth_admin;
        GRANT EXECUTE ON FUNCTION core.custom_access_token_hook(jsonb) TO supabase_auth_admin;
    END IF;
END
$hook$;

-- anon and service_role get nothing. The operator functions (crm_private.create_tenant,
-- add_member, set_tenant_status, set_member_status, suspend_tenant, reactivate_tenant,
-- create_session, run_jobs, seal_audit_log, verify_audit_chain, audit_chain_head,
-- audit_ensure_partitions, audit_apply_retention, events_apply_retention, flush_events,
-- event_queue_status, schedule_tenant_deletion, cancel_tenant_deletion, delete_tenant_now,
-- run_due_deletions, purge_tenant_batch, archive_tenant, archive_directory,
-- tenant_tables), the audit and event writers (record_security_event, store_events)
-- and the auth helpers not listed above are for the DBA (a superuser) only.
