//! What survives a restart: the loaded (in load order) and disabled modules, in
//! `<data_dir>/native-modules.json`, written through a temporary file and a rename.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::loader::NativeModules;
use super::order;
use super::table::lock;

const STATE_FILE: &str = "native-modules.json";

/// What survives a restart.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct Saved {
    pub(super) loaded: Vec<String>,
    pub(super) disabled: Vec<String>,
}

impl NativeModules {
    pub(super) fn state_path(&self) -> PathBuf {
        self.shared.settings.data_dir.join(STATE_FILE)
    }

    pub(super) fn read_saved(&self) -> Saved {
        std::fs::read(self.state_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Records the loaded (in load order) and disabled modules.
    pub(super) fn save(&self) {
        let saved = {
            let table = lock(&self.shared.table);
            let mut loaded: Vec<String> = Vec::new();
            let manifests = table.manifests();
            for (name, entry) in &table.entries {
                if entry.module.is_some()
                    && let Ok(chain) = order::load_order(name, &manifests)
                {
                    for step in chain {
                        if !loaded.contains(&step) {
                            loaded.push(step);
                        }
                    }
                }
            }
            Saved {
                loaded,
                disabled: table.disabled.iter().cloned().collect(),
            }
        };
        let write = || -> std::io::Result<()> {
            let path = self.state_path();
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&saved)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(err) = write() {
            tracing::warn!(error = %err, "could not record the native modules' states");
        }
    }
}
