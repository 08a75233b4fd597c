//! `tributary-kafka-connector`: the Kafka connector as a program of its own, with the settings of
//! `tributary connector kafka` and only its code (a fraction of `tributary`'s: less memory).

fn main() -> std::process::ExitCode {
    use tributary_cli::{connector_cmd, program};
    program::connector_main("kafka", connector_cmd::about::KAFKA, connector_cmd::kafka)
}
