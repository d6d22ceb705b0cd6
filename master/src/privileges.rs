//! Dropping root in the workers after the master bound the listeners.
//!
//! The master keeps its privileges: on reload it may have to bind new
//! privileged ports. Workers, which touch client bytes, run as
//! `[global] user`/`group`.

use corral_config::Global;
use nix::unistd::{setgid, setgroups, setuid, Group, User};

/// Switches to the configured group and user, if any.
pub fn drop_to(global: &Global) -> Result<(), String> {
    if let Some(name) = &global.group {
        let g = Group::from_name(name)
            .map_err(|e| format!("cannot look up group '{name}': {e}"))?
            .ok_or_else(|| format!("no such group '{name}'"))?;
        setgroups(&[g.gid]).map_err(|e| format!("cannot set groups: {e}"))?;
        setgid(g.gid).map_err(|e| format!("cannot switch to group '{name}': {e}"))?;
    }
    if let Some(name) = &global.user {
        let u = User::from_name(name)
            .map_err(|e| format!("cannot look up user '{name}': {e}"))?
            .ok_or_else(|| format!("no such user '{name}'"))?;
        if global.group.is_none() {
            setgid(u.gid).map_err(|e| format!("cannot switch to the group of '{name}': {e}"))?;
        }
        setuid(u.uid).map_err(|e| format!("cannot switch to user '{name}': {e}"))?;
    }
    Ok(())
}
