//! A custom connector in about 30 lines: each line of stdin goes to the functions whose `topic`
//! annotation names `$topic` (default `lines`). Dead letters are printed to stderr.
//!
//! `gateway_url=http://127.0.0.1:8080 cargo run -p tributary-connector-sdk --example stdin < file`

use tokio::io::AsyncBufReadExt;
use tributary_connector_sdk::{
    Acknowledge, ControllerConfig, DeadLetter, Message, Source, SourceContext, SourceError,
};

struct Line(usize);

#[async_trait::async_trait]
impl Acknowledge for Line {
    async fn ack(self: Box<Self>) {}
    async fn nack(self: Box<Self>, _: Option<std::time::Duration>) {}
    async fn dead_letter(self: Box<Self>, letter: DeadLetter) {
        eprintln!("line {} failed: {letter}", self.0);
    }
}

struct Stdin(String);

#[async_trait::async_trait]
impl Source for Stdin {
    fn name(&self) -> &str {
        "stdin-connector"
    }

    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut n = 0;
        while let Some(line) = lines.next_line().await? {
            n += 1;
            ctx.send(Message::new(&self.0, line, Line(n))).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let config = ControllerConfig::from_env()?;
    let topic = std::env::var("topic").unwrap_or_else(|_| "lines".into());
    tributary_connector_sdk::run(
        config,
        Stdin(topic),
        tributary_connector_sdk::shutdown_signal(),
    )
    .await?;
    Ok(())
}
