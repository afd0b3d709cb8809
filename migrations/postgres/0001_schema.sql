-- radacctd schema for PostgreSQL.
--
-- radacct is the FreeRADIUS 3.2 PostgreSQL schema (mods-config/sql/main/postgresql/
-- schema.sql): same names and types (bigserial, text, inet, timestamptz, bigint). Every
-- statement is IF NOT EXISTS, so pointing radacctd at a database FreeRADIUS created adds
-- only what is missing and changes nothing FreeRADIUS relies on. radacctd's own columns:
--   nas_id      nas.id of the client that sent the packets
--   sessionkey  FreeRADIUS acctuniqueid of the session's key, shared by every row of a
--               reused Acct-Session-Id (see docs/ACCOUNTING.md)
--   stopsource  'nas' when the NAS's Stop closed the row, 'server' when radacctd did

CREATE TABLE IF NOT EXISTS radacct (
    radacctid           bigserial PRIMARY KEY,
    acctsessionid       text NOT NULL,
    acctuniqueid        text NOT NULL UNIQUE,
    username            text,
    realm               text,
    nasipaddress        inet NOT NULL,
    nasportid           text,
    nasporttype         text,
    acctstarttime       timestamp with time zone,
    acctupdatetime      timestamp with time zone,
    acctstoptime        timestamp with time zone,
    acctinterval        bigint,
    acctsessiontime     bigint,
    acctauthentic       text,
    connectinfo_start   text,
    connectinfo_stop    text,
    acctinputoctets     bigint,
    acctoutputoctets    bigint,
    calledstationid     text,
    callingstationid    text,
    acctterminatecause  text,
    servicetype         text,
    framedprotocol      text,
    framedipaddress     inet,
    framedipv6address   inet,
    framedipv6prefix    inet,
    framedinterfaceid   text,
    delegatedipv6prefix inet,
    class               text
);

ALTER TABLE radacct ADD COLUMN IF NOT EXISTS nas_id bigint;
ALTER TABLE radacct ADD COLUMN IF NOT EXISTS sessionkey text;
ALTER TABLE radacct ADD COLUMN IF NOT EXISTS stopsource text;
-- Older FreeRADIUS schemas lack these; 3.2 has them.
ALTER TABLE radacct ADD COLUMN IF NOT EXISTS framedipv6address inet;
ALTER TABLE radacct ADD COLUMN IF NOT EXISTS framedipv6prefix inet;
ALTER TABLE radacct ADD COLUMN IF NOT EXISTS framedinterfaceid text;
ALTER TABLE radacct ADD COLUMN IF NOT EXISTS delegatedipv6prefix inet;
ALTER TABLE radacct ADD COLUMN IF NOT EXISTS class text;

-- Same columns as radacct; radacctid keeps the value the row had in radacct.
CREATE TABLE IF NOT EXISTS radacct_archive (LIKE radacct INCLUDING DEFAULTS);
ALTER TABLE radacct_archive ALTER COLUMN radacctid DROP DEFAULT;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'radacct_archive_pkey') THEN
        ALTER TABLE radacct_archive ADD CONSTRAINT radacct_archive_pkey PRIMARY KEY (radacctid);
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS radacct_events (
    id               bigserial PRIMARY KEY,
    radacctid        bigint NOT NULL,
    eventtype        text NOT NULL,
    eventtime        timestamp with time zone NOT NULL,
    acctsessiontime  bigint NOT NULL DEFAULT 0,
    acctinputoctets  bigint NOT NULL DEFAULT 0,
    acctoutputoctets bigint NOT NULL DEFAULT 0,
    source           text NOT NULL DEFAULT 'nas'
);
CREATE INDEX IF NOT EXISTS radacct_events_radacctid ON radacct_events (radacctid, eventtime);

CREATE TABLE IF NOT EXISTS radacct_events_archive (LIKE radacct_events INCLUDING DEFAULTS);
ALTER TABLE radacct_events_archive ALTER COLUMN id DROP DEFAULT;
CREATE INDEX IF NOT EXISTS radacct_events_archive_radacctid ON radacct_events_archive (radacctid);

-- NAS clients: the FreeRADIUS nas table plus disconnect settings.
CREATE TABLE IF NOT EXISTS nas (
    id          serial PRIMARY KEY,
    nasname     text NOT NULL,
    shortname   text NOT NULL,
    type        text NOT NULL DEFAULT 'other',
    ports       integer,
    secret      text NOT NULL,
    server      text,
    community   text,
    description text
);
ALTER TABLE nas ADD COLUMN IF NOT EXISTS coa_port integer NOT NULL DEFAULT 1700;
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_user text;
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_password text;
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_port integer NOT NULL DEFAULT 8728;
CREATE INDEX IF NOT EXISTS nas_nasname ON nas (nasname);

CREATE TABLE IF NOT EXISTS resellers (
    id         bigserial PRIMARY KEY,
    parent_id  bigint REFERENCES resellers (id),
    name       text NOT NULL DEFAULT '',
    created_at timestamp with time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS resellers_parent ON resellers (parent_id);

CREATE TABLE IF NOT EXISTS subscribers (
    id          bigserial PRIMARY KEY,
    username    text NOT NULL UNIQUE,
    reseller_id bigint REFERENCES resellers (id),
    is_online   boolean NOT NULL DEFAULT false,
    created_at  timestamp with time zone NOT NULL DEFAULT now(),
    updated_at  timestamp with time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS subscribers_reseller ON subscribers (reseller_id);

CREATE TABLE IF NOT EXISTS audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamp with time zone NOT NULL DEFAULT now(),
    actor        text NOT NULL DEFAULT '',
    actor_role   text NOT NULL DEFAULT '',
    action       text NOT NULL,
    radacctid    bigint,
    username     text,
    nas_id       bigint,
    nasipaddress inet,
    method       text,
    result       text NOT NULL,
    error_cause  text,
    rtt_ms       bigint,
    detail       text
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
