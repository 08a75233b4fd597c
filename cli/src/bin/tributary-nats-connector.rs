//! `tributary-nats-connector`: the NATS connector as a program of its own, with the settings of
//! `tributary connector nats` and only its code (a fraction of `tributary`'s: less memory).

fn main() -> std::process::ExitCode {
    use tributary_cli::{connector_cmd, program};
    program::connector_main("nats", connector_cmd::about::NATS, connector_cmd::nats)
}
