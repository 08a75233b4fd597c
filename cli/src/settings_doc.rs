//! The README's settings tables, generated from the settings' declarations (env name, flag,
//! default, doc comment). The test fails when the README and the code disagree; run it with
//! `TRIBUTARY_BLESS=1` to rewrite the tables:
//! `TRIBUTARY_BLESS=1 cargo test -p tributary-cli readme_settings`.

use clap::{Arg, Args, Command};

/// One README section: its marker name and the arguments it lists.
pub(crate) struct Section {
    pub(crate) name: &'static str,
    pub(crate) command: Command,
    /// Arguments of `command` listed in another section.
    pub(crate) skip: Vec<String>,
}

fn args_of<T: Args>() -> Command {
    T::augment_args(Command::new("settings"))
}

fn ids(cmd: &Command) -> Vec<String> {
    cmd.get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

/// Every section, in README order.
pub(crate) fn sections() -> Vec<Section> {
    use clap::CommandFactory;
    let plain = |name, command| Section {
        name,
        command,
        skip: Vec::new(),
    };
    let global = crate::Cli::command()
        .get_arguments()
        .fold(Command::new("global"), |c, a| c.arg(a.clone()));
    vec![
        plain("global", global),
        plain("gateway", args_of::<crate::gateway_cmd::GatewayArgs>()),
        Section {
            name: "up",
            command: args_of::<crate::gateway_cmd::UpArgs>(),
            skip: ids(&args_of::<crate::gateway_cmd::GatewayArgs>()),
        },
        Section {
            name: "queue-worker",
            command: args_of::<crate::queue_cmd::QueueWorkerArgs>(),
            skip: ids(&args_of::<tributary_queue::QueueConfig>())
                .into_iter()
                .chain(ids(&args_of::<tributary_queue::WorkerConfig>()))
                .collect(),
        },
        plain(
            "connector",
            crate::connector_cmd::RuntimeArgs::augment_args(args_of::<
                tributary_connector_sdk::ControllerConfig,
            >()),
        ),
        plain("cron", args_of::<tributary_cron::CronConfig>()),
        plain("nats", args_of::<tributary_nats::NatsConfig>()),
        plain("kafka", args_of::<tributary_kafka::KafkaConfig>()),
        plain("sqs", args_of::<tributary_sqs::SqsConfig>()),
    ]
}

fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn row(arg: &Arg) -> String {
    let env = arg.get_env().map_or_else(
        || "(flag only)".to_owned(),
        |e| format!("`{}`", e.to_string_lossy()),
    );
    let flag = match (arg.get_long(), arg.get_short()) {
        (Some(l), Some(s)) => format!("`-{s}`, `--{l}`"),
        (Some(l), None) => format!("`--{l}`"),
        (None, Some(s)) => format!("`-{s}`"),
        (None, None) => String::new(),
    };
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let default = if defaults.is_empty() {
        String::new()
    } else {
        format!("`{}`", defaults.join(","))
    };
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    format!("| {env} | {flag} | {default} | {} |", cell(&help))
}

/// The markdown table of one section.
pub(crate) fn table(section: &Section) -> String {
    let mut out = String::from("| env var | flag | default | meaning |\n|---|---|---|---|\n");
    for arg in section.command.get_arguments() {
        let id = arg.get_id().to_string();
        if section.skip.contains(&id) || arg.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        out.push_str(&row(arg));
        out.push('\n');
    }
    out
}

/// The README with every section's table replaced by the generated one; the names of the
/// sections whose markers are missing.
pub(crate) fn regenerate(readme: &str) -> (String, Vec<&'static str>) {
    let mut text = readme.to_owned();
    let mut missing = Vec::new();
    for section in sections() {
        let open = format!("<!-- settings:{} -->\n", section.name);
        let close = format!("<!-- /settings:{} -->", section.name);
        let (Some(start), Some(end)) = (text.find(&open), text.find(&close)) else {
            missing.push(section.name);
            continue;
        };
        let body_start = start + open.len();
        if end < body_start {
            missing.push(section.name);
            continue;
        }
        text.replace_range(body_start..end, &table(&section));
    }
    (text, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_settings_match_their_declarations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let (generated, missing) = regenerate(&readme);
        assert!(
            missing.is_empty(),
            "README.md lacks the markers <!-- settings:NAME --> ... <!-- /settings:NAME --> for {missing:?}"
        );
        if std::env::var_os("TRIBUTARY_BLESS").is_some() {
            std::fs::write(&path, &generated).expect("write README.md");
            return;
        }
        assert!(
            readme == generated,
            "README.md's settings tables disagree with the code: run `TRIBUTARY_BLESS=1 cargo test -p tributary-cli readme_settings` and review the diff"
        );
    }

    #[test]
    fn a_changed_default_is_caught() {
        let section = &sections()[4];
        assert_eq!(section.name, "connector");
        let table = table(section);
        assert!(
            table.contains("| `max_inflight` | `--max-inflight` | `64` |"),
            "{table}"
        );
        let readme = format!(
            "<!-- settings:connector -->\n{}<!-- /settings:connector -->\n",
            table.replace("`64`", "`65`")
        );
        let (generated, _) = regenerate(&readme);
        assert_ne!(generated, readme, "a drifted default must be rewritten");
    }
}
