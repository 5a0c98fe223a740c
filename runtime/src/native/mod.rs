//! Trusted native modules (issue 5, in progress): shared libraries an administrator drops
//! into `modules/<name>/` with a `module.json`, loaded into the host process (never into a
//! sandbox). So far: the manifest ([`manifest`]) and the load order ([`order`]); the loader,
//! its C ABI and the admin routes come next.

pub mod manifest;
pub mod order;
