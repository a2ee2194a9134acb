-- Supabase compatibility for plain PostgreSQL.
--
-- On a Supabase database every object below already exists and this file changes nothing:
-- each object is created only where it is absent. On plain PostgreSQL it provides the
-- subset pg_crm relies on: Supabase's four API roles, the `auth` schema with `auth.users`
-- in GoTrue's column layout, and `auth.uid()`, `auth.role()`, `auth.jwt()` defined as
-- Supabase defines them (reading the request's JWT claims from `request.jwt.claims`).
--
-- `CREATE EXTENSION pg_crm` runs this file first, so the extension alone works on a fresh
-- server; on plain PostgreSQL what it creates belongs to the extension (and to its dumps),
-- see the $adopt$ block in schema.sql. Applying it on its own before, as `make run` and the
-- Docker image do, is harmless: the extension adopts what it finds.

DO $compat$
BEGIN
    -- Roles, as Supabase creates them. `authenticator` is the only one that logs in: the
    -- edge connects as it and switches to `authenticated` per transaction.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;
    END IF;
    -- Supabase also makes authenticator a member of service_role (BYPASSRLS); the Aura
    -- edge never needs that, so plain PostgreSQL does not get it.
    GRANT anon, authenticated TO authenticator;

    IF pg_catalog.to_regnamespace('auth') IS NULL THEN
        CREATE SCHEMA auth;
        REVOKE ALL ON SCHEMA auth FROM PUBLIC;
    END IF;

    -- GoTrue's `auth.users` (its migrations, flattened). pg_crm reads `id` and `email`.
    IF pg_catalog.to_regclass('auth.users') IS NULL THEN
        CREATE TABLE auth.users (
            instance_id uuid,
            id uuid NOT NULL PRIMARY KEY,
            aud varchar(255),
            role varchar(255),
            email varchar(255),
            encrypted_password varchar(255),
            email_confirmed_at timestamptz,
            invited_at timestamptz,
            confirmation_token varchar(255),
            confirmation_sent_at timestamptz,
            recovery_token varchar(255),
            recovery_sent_at timestamptz,
            email_change_token_new varchar(255),
            email_change varchar(255),
            email_change_sent_at timestamptz,
            last_sign_in_at timestamptz,
            raw_app_meta_data jsonb,
            raw_user_meta_data jsonb,
            is_super_admin boolean,
            created_at timestamptz,
            updated_at timestamptz,
            phone text UNIQUE DEFAULT NULL,
            phone_confirmed_at timestamptz,
            phone_change text DEFAULT '',
            phone_change_token varchar(255) DEFAULT '',
            phone_change_sent_at timestamptz,
            confirmed_at timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
            email_change_token_current varchar(255) DEFAULT '',
            email_change_confirm_status smallint DEFAULT 0 CHECK (email_change_confirm_status >= 0 AND email_change_confirm_status <= 2),
            banned_until timestamptz,
            reauthentication_token varchar(255) DEFAULT '',
            reauthentication_sent_at timestamptz,
            is_sso_user boolean NOT NULL DEFAULT false,
            deleted_at timestamptz,
            is_anonymous boolean NOT NULL DEFAULT false
        );
        CREATE UNIQUE INDEX users_email_partial_key ON auth.users (email) WHERE (is_sso_user = false);
        CREATE INDEX users_instance_id_idx ON auth.users (instance_id);
        CREATE INDEX users_is_anonymous_idx ON auth.users (is_anonymous);
        REVOKE ALL ON auth.users FROM PUBLIC;
    END IF;

    -- The rest of GoTrue's tables pg_crm's auth service uses (GoTrue's layout, so a user
    -- moved between Aura and a Supabase project keeps working): identities, sessions,
    -- refresh tokens, one-time tokens.
    IF pg_catalog.to_regtype('auth.aal_level') IS NULL THEN
        CREATE TYPE auth.aal_level AS ENUM ('aal1', 'aal2', 'aal3');
    END IF;
    IF pg_catalog.to_regtype('auth.one_time_token_type') IS NULL THEN
        CREATE TYPE auth.one_time_token_type AS ENUM (
            'confirmation_token', 'reauthentication_token', 'recovery_token',
            'email_change_token_new', 'email_change_token_current', 'phone_change_token');
    END IF;
    IF pg_catalog.to_regclass('auth.identities') IS NULL THEN
        CREATE TABLE auth.identities (
            provider_id text NOT NULL,
            user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
            identity_data jsonb NOT NULL,
            provider text NOT NULL,
            last_sign_in_at timestamptz,
            created_at timestamptz,
            updated_at timestamptz,
            email text GENERATED ALWAYS AS (lower(identity_data ->> 'email')) STORED,
            id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
            CONSTRAINT identities_provider_id_provider_unique UNIQUE (provider_id, provider)
        );
        CREATE INDEX identities_user_id_idx ON auth.identities (user_id);
        CREATE INDEX identities_email_idx ON auth.identities (email text_pattern_ops);
        REVOKE ALL ON auth.identities FROM PUBLIC;
    END IF;
    IF pg_catalog.to_regclass('auth.sessions') IS NULL THEN
        CREATE TABLE auth.sessions (
            id uuid NOT NULL PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
            created_at timestamptz,
            updated_at timestamptz,
            factor_id uuid,
            aal auth.aal_level,
            not_after timestamptz,
            refreshed_at timestamp,
            user_agent text,
            ip inet,
            tag text
        );
        CREATE INDEX sessions_user_id_idx ON auth.sessions (user_id);
        CREATE INDEX user_id_created_at_idx ON auth.sessions (user_id, created_at);
        CREATE INDEX sessions_not_after_idx ON auth.sessions (not_after DESC);
        REVOKE ALL ON auth.sessions FROM PUBLIC;
    END IF;
    IF pg_catalog.to_regclass('auth.refresh_tokens') IS NULL THEN
        CREATE TABLE auth.refresh_tokens (
            instance_id uuid,
            id bigserial PRIMARY KEY,
            token varchar(255) CONSTRAINT refresh_tokens_token_unique UNIQUE,
            user_id varchar(255),
            revoked boolean,
            created_at timestamptz,
            updated_at timestamptz,
            parent varchar(255),
            session_id uuid REFERENCES auth.sessions (id) ON DELETE CASCADE
        );
        CREATE INDEX refresh_tokens_instance_id_user_id_idx ON auth.refresh_tokens (instance_id, user_id);
        CREATE INDEX refresh_tokens_parent_idx ON auth.refresh_tokens (parent);
        CREATE INDEX refresh_tokens_session_id_revoked_idx ON auth.refresh_tokens (session_id, revoked);
        CREATE INDEX refresh_tokens_updated_at_idx ON auth.refresh_tokens (updated_at DESC);
        REVOKE ALL ON auth.refresh_tokens FROM PUBLIC;
    END IF;
    IF pg_catalog.to_regclass('auth.one_time_tokens') IS NULL THEN
        CREATE TABLE auth.one_time_tokens (
            id uuid NOT NULL PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
            token_type auth.one_time_token_type NOT NULL,
            token_hash text NOT NULL CHECK (char_length(token_hash) > 0),
            relates_to text NOT NULL,
            created_at timestamp NOT NULL DEFAULT now(),
            updated_at timestamp NOT NULL DEFAULT now(),
            CONSTRAINT one_time_tokens_user_id_token_type_key UNIQUE (user_id, token_type)
        );
        CREATE INDEX one_time_tokens_token_hash_hash_idx ON auth.one_time_tokens USING hash (token_hash);
        CREATE INDEX one_time_tokens_relates_to_hash_idx ON auth.one_time_tokens USING hash (relates_to);
        REVOKE ALL ON auth.one_time_tokens FROM PUBLIC;
    END IF;

    IF pg_catalog.to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $fn$;
        COMMENT ON FUNCTION auth.uid() IS 'Deprecated. Use auth.jwt() -> ''sub'' instead.';
    END IF;
    IF pg_catalog.to_regprocedure('auth.role()') IS NULL THEN
        CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $fn$;
        COMMENT ON FUNCTION auth.role() IS 'Deprecated. Use auth.jwt() -> ''role'' instead.';
    END IF;
    IF pg_catalog.to_regprocedure('auth.jwt()') IS NULL THEN
        CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $fn$;
    END IF;
    GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO anon, authenticated, service_role;
END
$compat$;
