//! `tributary-cron-connector`: the cron connector as a program of its own, with the settings of
//! `tributary connector cron` and only its code (a fraction of `tributary`'s: less memory).

fn main() -> std::process::ExitCode {
    use tributary_cli::{connector_cmd, program};
    program::connector_main("cron", connector_cmd::about::CRON, connector_cmd::cron)
}
