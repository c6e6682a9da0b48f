//! The CLI subcommands that are not the server itself.
//!
//! - [`credentials`]: `ferroturn user`, `secret` and `credential`, working on the
//!   credential store directly (no running server needed).
//! - [`api_token`]: `ferroturn api-token`, the bearer tokens of the credentials
//!   API, in the store.
//! - [`cluster`]: `ferroturn cluster status`, the node registry of a
//!   PostgreSQL store.
//! - [`control`]: `ferroturn sessions`, `reload` and `drain`, clients of a running
//!   server's admin socket ([`crate::ops::admin_socket`]).
//! - [`doctor`]: `ferroturn doctor`, a TURN client that checks a running server
//!   from where it runs and reports PASS/WARN/FAIL per check.
//! - [`import_coturn`]: `ferroturn import coturn`, a coturn configuration and
//!   user database turned into a ferroturn configuration and store.
#![forbid(unsafe_code)]

pub mod api_token;
pub mod cluster;
pub mod control;
pub mod credentials;
pub mod doctor;
pub mod import_coturn;
