//! What Tributary's programs share: `tributary` (every component as a subcommand) and each
//! connector's own program (`tributary-kafka-connector`, ...), which runs the same code with the
//! same settings but links only its connector, so it maps less code and less relocated data.
//!
//! ```no_run
//! // A connector's whole program: settings from flags and env, logs, SIGTERM, exit status.
//! fn main() -> std::process::ExitCode {
//!     use tributary_cli::{connector_cmd, program};
//!     program::connector_main("kafka", connector_cmd::about::KAFKA, connector_cmd::kafka)
//! }
//! ```

pub mod connector_cmd;
pub mod logging;
pub mod memory;
pub mod program;
