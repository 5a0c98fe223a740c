//! Line tracing and breakpoints of an owner's tools (enableDebug, setBreakpoint).

use super::{Registry, RegistryError, SESSION_ALIAS, lock};
use crate::protocol::Debug;

/// Most breakpoints per tool.
pub const MAX_BREAKPOINTS: usize = 64;

impl Registry {
    /// Turns line tracing on or off for `alias`, or (without one) for every loaded tool and
    /// those loaded later. Returns the aliases changed.
    pub fn set_trace(&self, alias: Option<&str>, on: bool) -> Result<Vec<String>, RegistryError> {
        let tools = match alias {
            Some(alias) => vec![self.get(alias)?],
            None => {
                *lock(&self.trace_default) = on;
                self.ready_tools()
            }
        };
        let mut changed: Vec<String> = tools
            .iter()
            .filter(|tool| tool.alias != SESSION_ALIAS)
            .map(|tool| {
                lock(&tool.debug).trace = on;
                tool.alias.clone()
            })
            .collect();
        changed.sort();
        Ok(changed)
    }

    /// Adds a breakpoint at `line` of `alias`'s script, or (`None`) clears them all. At most
    /// [`MAX_BREAKPOINTS`]. Returns the tool's tracing settings.
    pub fn set_breakpoint(&self, alias: &str, line: Option<u32>) -> Result<Debug, RegistryError> {
        let tool = self.get(alias)?;
        let mut debug = lock(&tool.debug);
        match line {
            None => debug.breakpoints.clear(),
            Some(line) => {
                if !debug.breakpoints.contains(&line) && debug.breakpoints.len() >= MAX_BREAKPOINTS
                {
                    return Err(RegistryError::TooManyBreakpoints(MAX_BREAKPOINTS));
                }
                debug.breakpoints.insert(line);
            }
        }
        Ok(debug.clone())
    }
}
