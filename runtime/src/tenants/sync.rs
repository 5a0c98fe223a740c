//! Keeping this node's tenants in step with changes other nodes made to the shared store:
//! tenants and keys made or removed through another node, tools loaded, unloaded or reloaded
//! there, settings and strategies. Applying a change the node made itself changes nothing.

use std::sync::Arc;

use super::{Key, Origin, Tenant, Tenants};
use crate::store::cluster::Kind;

impl Tenants {
    /// Applies a change of `owner`'s `kind` made by any node.
    pub async fn apply(&self, owner: &str, kind: Kind) {
        match kind {
            Kind::Tenants => self.sync_api_tenants().await,
            Kind::Tools => {
                if let Some(tenant) = self.get(owner) {
                    tenant.registry.sync().await;
                    tenant.restore_strategies().await;
                }
            }
            Kind::Packages => {
                if let Some(tenant) = self.get(owner) {
                    self.materialize(&tenant).await;
                }
            }
        }
    }

    /// Makes `tenant`'s packages on this node what the store records (installed or removed
    /// through another node); a failure is logged, and the next change or start tries again.
    pub(super) async fn materialize(&self, tenant: &Tenant) {
        match self.parts.packages.materialize(&tenant.registry).await {
            Ok(done) if done.installed + done.removed > 0 => tracing::info!(
                tenant = %tenant.id,
                installed = done.installed,
                removed = done.removed,
                "packages made as the store records them"
            ),
            Ok(_) => {}
            Err(err) => {
                tracing::error!(tenant = %tenant.id, cause = %err, "could not bring the packages in step with the store")
            }
        }
    }

    /// Makes the tenants made through the API, and their keys, what the store says: new
    /// ones are built (and their records restored), removed ones dropped with their tools
    /// and this node's folders of theirs.
    async fn sync_api_tenants(&self) {
        let store = &self.parts.store;
        let (records, keys) = match (store.tenant_records().await, store.key_records().await) {
            (Ok(records), Ok(keys)) => (records, keys),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(cause = %err, "could not read the tenants to follow a change");
                return;
            }
        };
        let gone: Vec<Arc<Tenant>> = self
            .all()
            .into_iter()
            .filter(|t| t.origin == Origin::Api && !records.iter().any(|r| r.id == t.id))
            .collect();
        for tenant in &gone {
            {
                let mut table = self.write();
                table.by_id.remove(&tenant.id);
                table.keys.retain(|k| k.tenant.id != tenant.id);
            }
            tenant.registry.clear();
            self.parts.remove_folders(&tenant.id);
            tracing::info!(tenant = %tenant.id, "a tenant deleted on another node is gone here too");
        }
        let mut new = Vec::new();
        for record in records.iter().filter(|r| self.get(&r.id).is_none()) {
            match self.rebuild(record) {
                Ok(tenant) => {
                    self.write()
                        .by_id
                        .insert(record.id.clone(), Arc::clone(&tenant));
                    new.push(tenant);
                }
                Err(why) => {
                    tracing::error!(tenant = %record.id, %why, "a tenant made on another node could not be built")
                }
            }
        }
        // The API tenants' keys, exactly as recorded (a revoked key is gone from here too).
        {
            let mut table = self.write();
            table.keys.retain(|k| k.id.is_none());
            for key in &keys {
                let Some(tenant) = table.by_id.get(&key.tenant).cloned() else {
                    continue;
                };
                if tenant.origin != Origin::Api {
                    continue;
                }
                if let Some(digest) = crate::config::parse_key_hash(&key.sha256) {
                    table.keys.push(Key {
                        id: Some(key.id.clone()),
                        digest,
                        created_at: Some(key.created_at),
                        tenant,
                    });
                }
            }
        }
        for tenant in new {
            self.materialize(&tenant).await;
            tenant.restore().await;
        }
    }
}

impl crate::tasks::Owners for Tenants {
    fn owner(&self, id: &str) -> Option<crate::tasks::Owner> {
        self.get(id).map(|tenant| tenant.task_owner())
    }
}
