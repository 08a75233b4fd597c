//! Settings are declared once, as clap `Args` structs: the OpenFaaS env name, the flag, a typed
//! value with its parser, the default, and the doc comment as help. The command line parses them
//! with clap; [`from_env`] and [`from_lookup`] parse the very same definitions for libraries
//! (e.g. a connector built on the SDK), and [`defaults`] gives the declared defaults.
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(Debug, clap::Args)]
//! struct Example {
//!     /// How long a call may take.
//!     #[arg(long, env = "upstream_timeout", default_value = "60s",
//!           value_parser = tributary_core::units::parse_duration)]
//!     upstream_timeout: Duration,
//! }
//!
//! let e: Example = tributary_core::settings::from_lookup(|k| {
//!     (k == "upstream_timeout").then(|| "90s".to_owned())
//! })?;
//! assert_eq!(e.upstream_timeout, Duration::from_secs(90));
//! assert_eq!(tributary_core::settings::defaults::<Example>().upstream_timeout, Duration::from_secs(60));
//! # Ok::<(), tributary_core::settings::SettingsError>(())
//! ```

use clap::error::{ContextKind, ContextValue};
use clap::{Args, Command, FromArgMatches};

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value given through the environment does not parse.
    #[error("invalid {env}={value:?}: {reason}")]
    Invalid {
        /// The environment variable.
        env: String,
        /// The value it holds.
        value: String,
        /// Why it is wrong and what would be right.
        reason: String,
    },
    /// The settings could not be read for another reason.
    #[error("the settings cannot be read")]
    Args(#[source] clap::Error),
}

/// The command holding `T`'s arguments, with their env names removed so clap itself never
/// reads the process environment.
fn command<T: Args>() -> Command {
    T::augment_args(Command::new("settings").no_binary_name(true)).mut_args(|a| a.env(None))
}

/// Reads `T` from the process environment (its declared env names).
pub fn from_env<T: Args + FromArgMatches>() -> Result<T, SettingsError> {
    from_lookup(|k| std::env::var(k).ok())
}

/// Reads `T` through `lookup`, which gives the value of an env name (empty counts as unset).
pub fn from_lookup<T: Args + FromArgMatches>(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<T, SettingsError> {
    let declared = T::augment_args(Command::new("settings"));
    // (env, flag, value) for every setting the lookup gives a value for.
    let mut given: Vec<(String, String, String)> = Vec::new();
    for arg in declared.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let env = env.to_string_lossy().into_owned();
        if let Some(value) = lookup(&env).filter(|v| !v.trim().is_empty()) {
            given.push((env, long.to_owned(), value));
        }
    }
    let argv: Vec<String> = given
        .iter()
        .map(|(_, long, value)| format!("--{long}={value}"))
        .collect();
    command::<T>()
        .try_get_matches_from(argv)
        .and_then(|m| T::from_arg_matches(&m))
        .map_err(|e| explain(e, &given))
}

/// The declared defaults of `T`.
///
/// # Panics
/// When a declared default does not parse: a bug in the declaration, which the crates' tests
/// catch.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    match from_lookup(|_| None) {
        Ok(t) => t,
        Err(e) => panic!("a declared default does not parse: {e}"),
    }
}

/// Makes env vars that are set but empty count as unset, in `cmd` and its subcommands (Helm
/// charts and shells often set them empty): the declared default applies instead.
pub fn ignore_empty_env(cmd: Command) -> Command {
    let cmd = cmd.mut_args(|arg| {
        let empty = arg.get_env().is_some_and(|name| {
            std::env::var_os(name).is_some_and(|v| v.to_string_lossy().trim().is_empty())
        });
        if empty { arg.env(None) } else { arg }
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names
        .into_iter()
        .fold(cmd, |cmd, name| cmd.mut_subcommand(name, ignore_empty_env))
}

/// The flag (without dashes) a clap error is about, and the error's own reason.
fn invalid_flag(err: &clap::Error) -> Option<(String, String)> {
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => return None,
    };
    let long = arg
        .trim_start_matches('-')
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .to_owned();
    let reason = match std::error::Error::source(err) {
        Some(inner) => inner.to_string(),
        None => err
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned(),
    };
    Some((long, reason))
}

/// Names the env var behind a clap error, when the value came from one.
fn explain(err: clap::Error, given: &[(String, String, String)]) -> SettingsError {
    let Some((long, reason)) = invalid_flag(&err) else {
        return SettingsError::Args(err);
    };
    match given.iter().find(|(_, l, _)| *l == long) {
        Some((env, _, value)) => SettingsError::Invalid {
            env: env.clone(),
            value: value.clone(),
            reason,
        },
        None => SettingsError::Args(err),
    }
}

/// For a command-line parse error about a value that came from an env var (the variable is set
/// to the value clap refused), a message naming the variable: `invalid NAME="value": reason`.
pub fn env_error(err: &clap::Error, cmd: &Command) -> Option<String> {
    let (long, reason) = invalid_flag(err)?;
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => return None,
    };
    let env = find_env(cmd, &long)?;
    let set = std::env::var(&env).ok()?;
    (set == value || set.trim() == value.trim())
        .then(|| format!("invalid {env}={value:?}: {reason}"))
}

/// The env name of the argument with flag `--long`, in `cmd` or its subcommands.
fn find_env(cmd: &Command, long: &str) -> Option<String> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .or_else(|| cmd.get_subcommands().find_map(|s| find_env(s, long)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    #[derive(Debug, clap::Args)]
    struct Sample {
        /// A duration.
        #[arg(long, env = "wait", default_value = "5s", value_parser = crate::units::parse_positive_duration)]
        wait: Duration,
        /// A switch.
        #[arg(long, env = "flag", default_value = "false", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        flag: bool,
        /// A list.
        #[arg(long, env = "items", value_delimiter = ',')]
        items: Vec<String>,
    }

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_values_parse_like_flags_and_errors_name_the_env_var() {
        let s: Sample =
            from_lookup(lookup(&[("wait", "1m"), ("flag", "t"), ("items", "a,b")])).expect("ok");
        assert_eq!(s.wait, Duration::from_secs(60));
        assert!(s.flag);
        assert_eq!(s.items, ["a", "b"]);
        let d: Sample = defaults();
        assert_eq!(
            (d.wait, d.flag, d.items.len()),
            (Duration::from_secs(5), false, 0)
        );
        let empty: Sample = from_lookup(lookup(&[("wait", " ")])).expect("empty is unset");
        assert_eq!(empty.wait, Duration::from_secs(5));
        for (k, v, needle) in [
            ("wait", "0s", "longer than zero"),
            ("flag", "maybe", "flag"),
        ] {
            let err = from_lookup::<Sample>(lookup(&[(k, v)])).expect_err(k);
            let text = err.to_string();
            assert!(text.contains(&format!("invalid {k}=")), "{text}");
            assert!(text.contains(needle), "{text}");
        }
    }
}
