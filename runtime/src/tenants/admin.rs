//! Tenants and keys through the admin API: a tenant is created with a generated key (shown
//! once, stored only as its SHA-256), may be given more keys (rotation) and have them
//! revoked, and may be deleted with everything it owns. Each change is recorded in the
//! store before the table the requests are checked against changes, so a revoked key is
//! refused from the next request on, and nothing is lost or half-done across a restart.
//! The config file's tenants are read-only here.

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::build::Spec;
use super::{Key, Origin, Tenant, Tenants};
use crate::config::{Policy, Quotas, Role, valid_tenant_id, validate_quotas};
use crate::sandbox::{LimitOverrides, Limits};
use crate::store::tenants::{KeyRecord, TenantRecord};
use crate::store::{StoreError, now};

/// Most keys one tenant may hold.
pub const MAX_KEYS: usize = 16;
/// Most tenants the API may create.
pub const MAX_API_TENANTS: usize = 10_000;

/// A tenant to create.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// 1-32 of `a-z 0-9 _ -`; it names folders and appears in logs.
    pub id: String,
    /// `tenant` (the default) or `admin`.
    #[serde(default = "tenant_role")]
    #[schema(value_type = Option<String>)]
    pub role: Role,
    /// Its quotas; absent ones get the defaults (see docs/configuration.md).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub quotas: Option<Quotas>,
    /// What its tools may reach beyond their sandbox (all off by default).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Policy>,
    /// Its maxima per call (each at most the server's `[limits]`); absent: the server's.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub limits: Option<Limits>,
    /// What a load gets when it asks for nothing.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub default_limits: Option<LimitOverrides>,
}

fn tenant_role() -> Role {
    Role::Tenant
}

/// A key just made: the only time the key itself is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    pub key_id: String,
    /// The key: send it as `X-API-Key`. It is not stored and cannot be shown again.
    pub api_key: String,
    pub created_at: f64,
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub key_id: String,
    pub created_at: f64,
}

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadSpec(String),
    #[error("a tenant of that id exists")]
    Exists,
    #[error("no tenant of that id")]
    NotFound,
    #[error("no key of that id for the tenant")]
    KeyNotFound,
    #[error("the tenant is declared in the config file; change it there")]
    ReadOnly,
    #[error("the tenant already holds {MAX_KEYS} keys; revoke one first")]
    TooManyKeys,
    #[error("the server already has {MAX_API_TENANTS} tenants made through the API")]
    TooManyTenants,
    #[error("the tenant could not be set up: {0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The spec a tenant made through the API is recorded with (and rebuilt from).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedSpec {
    quotas: Quotas,
    policy: Policy,
    limits: Limits,
    default_limits: LimitOverrides,
}

/// A new random key: `sbx_` and 32 random bytes (base64url), with a random id.
fn generate_key() -> Result<(String, String), AdminError> {
    let mut secret = [0u8; 32];
    let mut id = [0u8; 6];
    getrandom::fill(&mut secret)
        .and_then(|()| getrandom::fill(&mut id))
        .map_err(|err| AdminError::Setup(format!("no randomness for a key: {err}")))?;
    let key = format!(
        "sbx_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    Ok((format!("key_{}", hex::encode(id)), key))
}

impl Tenants {
    /// Creates a tenant with its first key, recorded in the store.
    pub async fn create(&self, new: NewTenant) -> Result<(Arc<Tenant>, IssuedKey), AdminError> {
        if !valid_tenant_id(&new.id) {
            return Err(AdminError::BadSpec(
                "id must be 1-32 of a-z, 0-9, '_' and '-'".into(),
            ));
        }
        if self.get(&new.id).is_some() {
            return Err(AdminError::Exists);
        }
        let api_tenants = self
            .all()
            .iter()
            .filter(|t| t.origin == Origin::Api)
            .count();
        if api_tenants >= MAX_API_TENANTS {
            return Err(AdminError::TooManyTenants);
        }
        let spec = self.checked_spec(&new)?;
        let tenant = Arc::new(self.make_api_tenant(&new.id, new.role, &spec)?);
        let (key_id, api_key) = generate_key()?;
        let created_at = now();
        let record = TenantRecord {
            id: new.id.clone(),
            role: role_name(new.role).to_owned(),
            spec: serde_json::to_string(&spec).map_err(|e| AdminError::Setup(e.to_string()))?,
            created_at,
        };
        let key = KeyRecord {
            id: key_id.clone(),
            tenant: new.id.clone(),
            sha256: hex::encode(Sha256::digest(api_key.as_bytes())),
            created_at,
        };
        if !self.parts.store.insert_tenant(&record, &key).await? {
            return Err(AdminError::Exists);
        }
        {
            let mut table = self.write();
            table.by_id.insert(new.id.clone(), Arc::clone(&tenant));
            table.keys.push(Key {
                id: Some(key_id.clone()),
                digest: Sha256::digest(api_key.as_bytes()).into(),
                created_at: Some(created_at),
                tenant: Arc::clone(&tenant),
            });
        }
        Ok((
            tenant,
            IssuedKey {
                key_id,
                api_key,
                created_at,
            },
        ))
    }

    /// The spec of `new`, checked like the config's, its quotas within the server's.
    fn checked_spec(&self, new: &NewTenant) -> Result<RecordedSpec, AdminError> {
        let config = &self.parts.config;
        let quotas = new.quotas.clone().unwrap_or_default();
        validate_quotas(&quotas).map_err(|e| AdminError::BadSpec(format!("quotas: {e}")))?;
        let policy = new.policy.clone().unwrap_or_default();
        policy
            .validate()
            .map_err(|e| AdminError::BadSpec(format!("policy: {e}")))?;
        let limits = match new.limits {
            Some(limits) => config
                .limits
                .lowered(&LimitOverrides {
                    fuel: Some(limits.fuel),
                    deadline_ms: Some(limits.deadline_ms),
                    memory_bytes: Some(limits.memory_bytes),
                    output_bytes: Some(limits.output_bytes),
                })
                .map_err(|e| AdminError::BadSpec(format!("limits: {e}")))?,
            None => config.limits,
        };
        let default_limits = new.default_limits.unwrap_or_default();
        limits
            .lowered(&default_limits)
            .map_err(|e| AdminError::BadSpec(format!("default_limits: {e}")))?;
        Ok(RecordedSpec {
            quotas,
            policy,
            limits,
            default_limits,
        })
    }

    fn make_api_tenant(
        &self,
        id: &str,
        role: Role,
        spec: &RecordedSpec,
    ) -> Result<Tenant, AdminError> {
        self.parts
            .make(Spec {
                id,
                role,
                origin: Origin::Api,
                scripts_dir: &self.parts.config.scripts_dir,
                quotas: &spec.quotas,
                limits: spec.limits,
                defaults: spec.default_limits,
                policy: &spec.policy,
            })
            .map_err(|e| AdminError::Setup(format!("{e:#}")))
    }

    /// A tenant made through the API, for a change to it.
    fn api_tenant(&self, id: &str) -> Result<Arc<Tenant>, AdminError> {
        let tenant = self.get(id).ok_or(AdminError::NotFound)?;
        if tenant.origin != Origin::Api {
            return Err(AdminError::ReadOnly);
        }
        Ok(tenant)
    }

    /// Gives a tenant one more key.
    pub async fn add_key(&self, id: &str) -> Result<IssuedKey, AdminError> {
        let tenant = self.api_tenant(id)?;
        if self.keys(id)?.len() >= MAX_KEYS {
            return Err(AdminError::TooManyKeys);
        }
        let (key_id, api_key) = generate_key()?;
        let created_at = now();
        let digest: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
        let record = KeyRecord {
            id: key_id.clone(),
            tenant: id.to_owned(),
            sha256: hex::encode(digest),
            created_at,
        };
        if !self.parts.store.add_key(&record).await? {
            return Err(AdminError::NotFound);
        }
        self.write().keys.push(Key {
            id: Some(key_id.clone()),
            digest,
            created_at: Some(created_at),
            tenant,
        });
        Ok(IssuedKey {
            key_id,
            api_key,
            created_at,
        })
    }

    /// A tenant's keys (made through the API), oldest first.
    pub fn keys(&self, id: &str) -> Result<Vec<KeyInfo>, AdminError> {
        self.get(id).ok_or(AdminError::NotFound)?;
        Ok(self
            .read()
            .keys
            .iter()
            .filter(|k| k.tenant.id == id)
            .filter_map(|k| {
                Some(KeyInfo {
                    key_id: k.id.clone()?,
                    created_at: k.created_at?,
                })
            })
            .collect())
    }

    /// Revokes one of a tenant's keys: refused from the next request on.
    pub async fn revoke_key(&self, id: &str, key_id: &str) -> Result<(), AdminError> {
        self.api_tenant(id)?;
        if !self.parts.store.delete_key(id, key_id).await? {
            return Err(AdminError::KeyNotFound);
        }
        self.write()
            .keys
            .retain(|k| !(k.tenant.id == id && k.id.as_deref() == Some(key_id)));
        Ok(())
    }

    /// Deletes a tenant made through the API: its keys stop working at once, its tools are
    /// unloaded, and its records (scripts, tools, settings, jobs, tasks) and folders
    /// (scratch, packages, logs) are removed.
    pub async fn delete(&self, id: &str) -> Result<Arc<Tenant>, AdminError> {
        let tenant = self.api_tenant(id)?;
        self.parts.store.delete_tenant(id).await?;
        {
            let mut table = self.write();
            table.by_id.remove(id);
            table.keys.retain(|k| k.tenant.id != id);
        }
        tenant.registry.clear();
        self.parts.remove_folders(id);
        Ok(tenant)
    }

    /// Rebuilds the tenants recorded in the store, with their keys.
    pub(super) async fn restore_api_tenants(&self) {
        let store = &self.parts.store;
        let (records, keys) = match (store.tenant_records().await, store.key_records().await) {
            (Ok(records), Ok(keys)) => (records, keys),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(cause = %err, "could not read the tenants made through the API");
                return;
            }
        };
        for record in records {
            if self.get(&record.id).is_some() {
                tracing::warn!(tenant = %record.id, "a recorded tenant has the id of one in the config; the config's wins");
                continue;
            }
            let tenant = match self.rebuild(&record) {
                Ok(tenant) => tenant,
                Err(why) => {
                    tracing::error!(tenant = %record.id, %why, "a recorded tenant could not be rebuilt; skipped");
                    continue;
                }
            };
            let mut table = self.write();
            for key in keys.iter().filter(|k| k.tenant == record.id) {
                match crate::config::parse_key_hash(&key.sha256) {
                    Some(digest) => table.keys.push(Key {
                        id: Some(key.id.clone()),
                        digest,
                        created_at: Some(key.created_at),
                        tenant: Arc::clone(&tenant),
                    }),
                    None => {
                        tracing::warn!(tenant = %record.id, key = %key.id, "a recorded key is damaged; skipped")
                    }
                }
            }
            table.by_id.insert(record.id.clone(), tenant);
        }
    }
}

impl Tenants {
    /// A tenant made through the API, from its record.
    pub(super) fn rebuild(&self, record: &TenantRecord) -> Result<Arc<Tenant>, String> {
        let spec = serde_json::from_str::<RecordedSpec>(&record.spec)
            .map_err(|e| format!("its spec: {e}"))?;
        let role = match record.role.as_str() {
            "admin" => Role::Admin,
            _ => Role::Tenant,
        };
        self.make_api_tenant(&record.id, role, &spec)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Tenant => "tenant",
    }
}
