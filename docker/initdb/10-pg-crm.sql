-- Runs once, when the image initialises an empty data directory.
CREATE EXTENSION IF NOT EXISTS pg_crm CASCADE;
