//! Configuration: one [`Config`] from a TOML file, `GRASP_*` environment variables and CLI
//! flags, with precedence CLI > environment > file > defaults.
//!
//! The environment names of ngit-grasp (`NGIT_*`) are accepted as aliases with the same
//! meaning, so existing deployments and client test harnesses switch over unchanged. A
//! `GRASP_*` variable wins over its `NGIT_*` alias.
//!
//! Every option has the same name in all three places: `max_limit` in the file,
//! `--max-limit` on the command line, `GRASP_MAX_LIMIT` in the environment.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`schema`] | [`Config`]: every option, its type and default |
//! | [`args`] | [`ConfigArgs`]: the command line and environment, and [`Config::load`] |
//! | [`validate`] | values that parse but cannot work |
//! | [`settings`] | the projection into each subsystem's settings type |
//!
//! Only this layer (and the node above it) reads `Config`; every subsystem takes its own
//! settings type, which carries its defaults.

pub mod args;
pub mod schema;
pub mod settings;
pub mod validate;

pub use args::{annotate_help, hide_options, with_env_aliases, ConfigArgs, NGIT_ENV_ALIASES, PROXY_OPTIONS};
pub use schema::{Config, ConfigError, EventPolicyChoice, Secret};
