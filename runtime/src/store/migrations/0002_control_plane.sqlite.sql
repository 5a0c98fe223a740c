-- The control plane: tenants' scripts, each owner's desired registry state, callAsync jobs,
-- tenants created through the API and their keys' digests.
CREATE TABLE script_versions (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (owner, name, version)
);
CREATE INDEX script_versions_by_seq ON script_versions (owner, name, seq);
CREATE TABLE tools (
    owner TEXT NOT NULL,
    alias TEXT NOT NULL,
    script_name TEXT NOT NULL,
    source TEXT NOT NULL,
    version TEXT NOT NULL,
    mode TEXT NOT NULL,
    limits TEXT NOT NULL,
    debug TEXT NOT NULL,
    loaded_at REAL NOT NULL,
    PRIMARY KEY (owner, alias)
);
CREATE TABLE owner_settings (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    alias TEXT NOT NULL,
    function_name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    result TEXT,
    error TEXT
);
CREATE INDEX jobs_by_owner ON jobs (owner, created_at);
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant);
