-- Several nodes on one store: a log of changes the nodes follow, the nodes' heartbeats,
-- task leases (which node runs a task, until when) and the node of each history row and
-- job, tenants' installed packages with their wheels, and the audit log.
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
ALTER TABLE tasks ADD COLUMN node TEXT;
ALTER TABLE tasks ADD COLUMN lease_until REAL;
ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE history ADD COLUMN node TEXT;
ALTER TABLE jobs ADD COLUMN node TEXT;
-- A wheel by the SHA-256 of its content, with the file name pip gave it (the name says
-- which distribution and version it holds).
CREATE TABLE wheels (
    sha256 TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    content BLOB NOT NULL
);
-- An owner's package in an environment; a removed one stays as a row with removed = 1 so
-- that every node removes it too (a package a node has that the store never knew of, from
-- before this record existed, is left alone).
CREATE TABLE packages (
    owner TEXT NOT NULL,
    env TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    installed_at REAL NOT NULL,
    PRIMARY KEY (owner, env, name)
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    node TEXT NOT NULL,
    tenant TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_tenant ON audit (tenant, seq);
