//! Turning a deployment into a [`Function`]: its command, mode, concurrency and replicas.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::LocalProvider;
use super::function::{Function, Mode};
use crate::error::GatewayError;
use crate::limits::count_label;
use crate::model::{FunctionDeployment, SCALE_MIN_LABEL};
use crate::provider::process::check_program;

impl LocalProvider {
    /// Builds a function from its deployment without starting anything.
    pub(super) fn build(
        &self,
        mut spec: FunctionDeployment,
        created_at: DateTime<Utc>,
    ) -> Result<Arc<Function>, GatewayError> {
        let namespace = spec.namespace_or_default().to_owned();
        spec.namespace = Some(namespace.clone());
        let command = spec.env_process.clone().unwrap_or_default();
        let argv = shell_words::split(&command).map_err(|e| {
            GatewayError::BadRequest(format!("envProcess {command:?} cannot be parsed: {e}"))
        })?;
        if argv.is_empty() {
            return Err(GatewayError::BadRequest(format!(
                "function {:?}: envProcess is required by the local provider (the command to run)",
                spec.service
            )));
        }
        let mode = match spec.env_vars.get("mode").map(|m| m.trim()) {
            Some("http") => Mode::Http,
            None | Some("" | "fork") => Mode::Fork,
            Some(other) => {
                return Err(GatewayError::BadRequest(format!(
                    "field `envVars.mode` must be `http` (a server on $PORT) or unset (the command runs per request), not {other:?}"
                )));
            }
        };
        let slots = match spec
            .env_vars
            .get("max_inflight")
            .map(|m| m.trim().parse::<usize>())
        {
            None => Some(self.inner.config.fork_max_inflight),
            Some(Ok(0)) => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return Err(GatewayError::BadRequest(
                    "field `envVars.max_inflight` must be a whole number (0: no limit)".into(),
                ));
            }
        };
        let desired = count_label(spec.labels.as_ref(), SCALE_MIN_LABEL)?.unwrap_or(1);
        let fork_error = match mode {
            Mode::Fork => check_program(&argv[0], &self.inner.path_var, &self.inner.work_dir).err(),
            Mode::Http => None,
        };
        let log = self.log_book(&namespace, &spec.service);
        Ok(Arc::new(Function {
            label: format!("{}.{namespace}", spec.service),
            log,
            spec,
            argv,
            mode,
            created_at,
            cancel: self.inner.cancel.child_token(),
            replicas: tokio::sync::Mutex::default(),
            desired: AtomicU64::new(desired),
            ready: RwLock::default(),
            ready_count: watch::channel(0).0,
            failures: watch::channel(0).0,
            last_error: Mutex::new(fork_error.clone()),
            fork_error,
            slots: slots.map(|n| (Arc::new(tokio::sync::Semaphore::new(n)), n)),
            next: AtomicUsize::new(0),
        }))
    }
}
