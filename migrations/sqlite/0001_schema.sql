-- radacctd schema for SQLite.
--
-- radacct follows the FreeRADIUS 3.2 SQLite schema (mods-config/sql/main/sqlite/schema.sql):
-- same column names, types and defaults, so that FreeRADIUS, daloRADIUS and ISP panels can
-- read and write the same file. Times are UTC text 'YYYY-MM-DD HH:MM:SS' as FreeRADIUS
-- writes them. Extra columns (radacctd's own) come last:
--   nas_id      nas.id of the client that sent the packets
--   sessionkey  FreeRADIUS acctuniqueid of the session's key, shared by every row of a
--               reused Acct-Session-Id (see docs/ACCOUNTING.md)
--   stopsource  'nas' when the NAS's Stop closed the row, 'server' when radacctd did
--               (Lost-Service, NAS-Reboot, Admin-Reset, NAS-Idle-Timeout)

CREATE TABLE IF NOT EXISTS radacct (
    radacctid INTEGER PRIMARY KEY AUTOINCREMENT,
    acctsessionid varchar(64) NOT NULL DEFAULT '',
    acctuniqueid varchar(32) NOT NULL DEFAULT '',
    username varchar(64) NOT NULL DEFAULT '',
    realm varchar(64) DEFAULT '',
    nasipaddress varchar(15) NOT NULL DEFAULT '',
    nasportid varchar(32) DEFAULT NULL,
    nasporttype varchar(32) DEFAULT NULL,
    acctstarttime datetime NULL DEFAULT NULL,
    acctupdatetime datetime NULL DEFAULT NULL,
    acctstoptime datetime NULL DEFAULT NULL,
    acctinterval int(12) DEFAULT NULL,
    acctsessiontime int(12) DEFAULT NULL,
    acctauthentic varchar(32) DEFAULT NULL,
    connectinfo_start varchar(50) DEFAULT NULL,
    connectinfo_stop varchar(50) DEFAULT NULL,
    acctinputoctets bigint(20) DEFAULT NULL,
    acctoutputoctets bigint(20) DEFAULT NULL,
    calledstationid varchar(50) NOT NULL DEFAULT '',
    callingstationid varchar(50) NOT NULL DEFAULT '',
    acctterminatecause varchar(32) NOT NULL DEFAULT '',
    servicetype varchar(32) DEFAULT NULL,
    framedprotocol varchar(32) DEFAULT NULL,
    framedipaddress varchar(15) NOT NULL DEFAULT '',
    framedipv6address varchar(45) NOT NULL DEFAULT '',
    framedipv6prefix varchar(45) NOT NULL DEFAULT '',
    framedinterfaceid varchar(44) NOT NULL DEFAULT '',
    delegatedipv6prefix varchar(45) NOT NULL DEFAULT '',
    class varchar(64) DEFAULT NULL,
    nas_id INTEGER DEFAULT NULL,
    sessionkey varchar(32) DEFAULT NULL,
    stopsource varchar(8) DEFAULT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS acctuniqueid ON radacct(acctuniqueid);

-- Same columns as radacct; radacctid keeps the value the row had in radacct.
CREATE TABLE IF NOT EXISTS radacct_archive (
    radacctid INTEGER PRIMARY KEY,
    acctsessionid varchar(64) NOT NULL DEFAULT '',
    acctuniqueid varchar(32) NOT NULL DEFAULT '',
    username varchar(64) NOT NULL DEFAULT '',
    realm varchar(64) DEFAULT '',
    nasipaddress varchar(15) NOT NULL DEFAULT '',
    nasportid varchar(32) DEFAULT NULL,
    nasporttype varchar(32) DEFAULT NULL,
    acctstarttime datetime NULL DEFAULT NULL,
    acctupdatetime datetime NULL DEFAULT NULL,
    acctstoptime datetime NULL DEFAULT NULL,
    acctinterval int(12) DEFAULT NULL,
    acctsessiontime int(12) DEFAULT NULL,
    acctauthentic varchar(32) DEFAULT NULL,
    connectinfo_start varchar(50) DEFAULT NULL,
    connectinfo_stop varchar(50) DEFAULT NULL,
    acctinputoctets bigint(20) DEFAULT NULL,
    acctoutputoctets bigint(20) DEFAULT NULL,
    calledstationid varchar(50) NOT NULL DEFAULT '',
    callingstationid varchar(50) NOT NULL DEFAULT '',
    acctterminatecause varchar(32) NOT NULL DEFAULT '',
    servicetype varchar(32) DEFAULT NULL,
    framedprotocol varchar(32) DEFAULT NULL,
    framedipaddress varchar(15) NOT NULL DEFAULT '',
    framedipv6address varchar(45) NOT NULL DEFAULT '',
    framedipv6prefix varchar(45) NOT NULL DEFAULT '',
    framedinterfaceid varchar(44) NOT NULL DEFAULT '',
    delegatedipv6prefix varchar(45) NOT NULL DEFAULT '',
    class varchar(64) DEFAULT NULL,
    nas_id INTEGER DEFAULT NULL,
    sessionkey varchar(32) DEFAULT NULL,
    stopsource varchar(8) DEFAULT NULL
);

-- Per-session history: one row per Start / Interim-Update / Stop that changed the
-- session, and one per close made by radacctd (source = 'server').
CREATE TABLE IF NOT EXISTS radacct_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    radacctid INTEGER NOT NULL,
    eventtype varchar(32) NOT NULL,
    eventtime datetime NOT NULL,
    acctsessiontime bigint NOT NULL DEFAULT 0,
    acctinputoctets bigint NOT NULL DEFAULT 0,
    acctoutputoctets bigint NOT NULL DEFAULT 0,
    source varchar(8) NOT NULL DEFAULT 'nas'
);
CREATE INDEX IF NOT EXISTS radacct_events_radacctid ON radacct_events(radacctid, eventtime);

CREATE TABLE IF NOT EXISTS radacct_events_archive (
    id INTEGER PRIMARY KEY,
    radacctid INTEGER NOT NULL,
    eventtype varchar(32) NOT NULL,
    eventtime datetime NOT NULL,
    acctsessiontime bigint NOT NULL DEFAULT 0,
    acctinputoctets bigint NOT NULL DEFAULT 0,
    acctoutputoctets bigint NOT NULL DEFAULT 0,
    source varchar(8) NOT NULL DEFAULT 'nas'
);
CREATE INDEX IF NOT EXISTS radacct_events_archive_radacctid ON radacct_events_archive(radacctid);

-- NAS clients: the FreeRADIUS nas table plus disconnect settings.
CREATE TABLE IF NOT EXISTS nas (
    id INTEGER PRIMARY KEY,
    nasname varchar(128) NOT NULL,
    shortname varchar(32),
    type varchar(30) DEFAULT 'other',
    ports int(5),
    secret varchar(60) DEFAULT 'secret' NOT NULL,
    server varchar(64),
    community varchar(50),
    description varchar(200) DEFAULT 'RADIUS Client',
    coa_port INTEGER NOT NULL DEFAULT 1700,
    api_user varchar(64) DEFAULT NULL,
    api_password varchar(128) DEFAULT NULL,
    api_port INTEGER NOT NULL DEFAULT 8728
);
CREATE INDEX IF NOT EXISTS nasname ON nas(nasname);

-- The reseller tree: a reseller sees the sessions of its own subscribers and of every
-- reseller below it.
CREATE TABLE IF NOT EXISTS resellers (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES resellers(id),
    name varchar(128) NOT NULL DEFAULT '',
    created_at datetime NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS resellers_parent ON resellers(parent_id);

CREATE TABLE IF NOT EXISTS subscribers (
    id INTEGER PRIMARY KEY,
    username varchar(64) NOT NULL UNIQUE,
    reseller_id INTEGER REFERENCES resellers(id),
    is_online INTEGER NOT NULL DEFAULT 0,
    created_at datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at datetime NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS subscribers_reseller ON subscribers(reseller_id);

-- Who disconnected what, when, how, and what happened.
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor varchar(128) NOT NULL DEFAULT '',
    actor_role varchar(16) NOT NULL DEFAULT '',
    action varchar(32) NOT NULL,
    radacctid INTEGER,
    username varchar(64),
    nas_id INTEGER,
    nasipaddress varchar(45),
    method varchar(16),
    result varchar(32) NOT NULL,
    error_cause varchar(64),
    rtt_ms INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at);
