//! `tributary-sqs-connector`: the SQS connector as a program of its own, with the settings of
//! `tributary connector sqs` and only its code (a fraction of `tributary`'s: less memory).

fn main() -> std::process::ExitCode {
    use tributary_cli::{connector_cmd, program};
    program::connector_main("sqs", connector_cmd::about::SQS, connector_cmd::sqs)
}
