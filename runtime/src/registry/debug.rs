//! Line tracing and breakpoints of an owner's tools (enableDebug, setBreakpoint).

use std::sync::Arc;

use super::{Registry, RegistryError, SESSION_ALIAS, lock};
use crate::protocol::Debug;

/// Most breakpoints per tool.
pub const MAX_BREAKPOINTS: usize = 64;

impl Registry {
    /// Turns line tracing on or off for `alias`, or (without one) for every loaded tool and
    /// those loaded later; recorded. Returns the aliases changed.
    pub async fn set_trace(
        self: &Arc<Self>,
        alias: Option<&str>,
        on: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let tools = match alias {
            Some(alias) => vec![self.ready(alias).await?],
            None => {
                self.record_trace(on).await?;
                *lock(&self.trace_default) = on;
                self.ready_tools()
            }
        };
        let mut changed = Vec::new();
        for tool in tools.iter().filter(|tool| tool.alias != SESSION_ALIAS) {
            let debug = {
                let mut debug = lock(&tool.debug);
                debug.trace = on;
                debug.clone()
            };
            self.record_debug(&tool.alias, &debug).await?;
            changed.push(tool.alias.clone());
        }
        changed.sort();
        Ok(changed)
    }

    /// Adds a breakpoint at `line` of `alias`'s script, or (`None`) clears them all. At most
    /// [`MAX_BREAKPOINTS`]; recorded. Returns the tool's tracing settings.
    pub async fn set_breakpoint(
        self: &Arc<Self>,
        alias: &str,
        line: Option<u32>,
    ) -> Result<Debug, RegistryError> {
        let tool = self.ready(alias).await?;
        let debug = {
            let mut debug = lock(&tool.debug);
            match line {
                None => debug.breakpoints.clear(),
                Some(line) => {
                    if !debug.breakpoints.contains(&line)
                        && debug.breakpoints.len() >= MAX_BREAKPOINTS
                    {
                        return Err(RegistryError::TooManyBreakpoints(MAX_BREAKPOINTS));
                    }
                    debug.breakpoints.insert(line);
                }
            }
            debug.clone()
        };
        self.record_debug(alias, &debug).await?;
        Ok(debug)
    }
}
