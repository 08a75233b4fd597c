//! The local provider's secrets: one file per secret under `<state_dir>/secrets/<namespace>/`,
//! readable by the gateway's user only (0600). A function that names secrets gets copies of just
//! those in a folder of its own, `<state_dir>/functions/<namespace>/<name>/secrets/`, whose path
//! it finds in `secret_mount_path` (OpenFaaS mounts the same files at `/var/openfaas/secrets/`).

use std::path::{Path, PathBuf};

use crate::error::GatewayError;
use crate::model::{FunctionDeployment, Secret};
use crate::state::StateDir;

/// Secret files on disk. Calls block: run them with `spawn_blocking`.
#[derive(Debug, Clone)]
pub(super) struct SecretStore {
    state: StateDir,
}

impl SecretStore {
    /// The store of `state`.
    pub(super) fn new(state: StateDir) -> Self {
        Self { state }
    }

    fn file(&self, namespace: &str, name: &str) -> PathBuf {
        self.state.secrets().join(namespace).join(name)
    }

    /// The folder `function` reads its secrets from.
    pub(super) fn mount_path(&self, namespace: &str, function: &str) -> PathBuf {
        self.state.function(namespace, function).join("secrets")
    }

    /// The names of a namespace's secrets, sorted.
    pub(super) fn list(&self, namespace: &str) -> Result<Vec<Secret>, GatewayError> {
        let dir = self.state.secrets().join(namespace);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list the secrets in", &dir, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| crate::model::validate_secret_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| Secret {
                name,
                namespace: Some(namespace.to_owned()),
                ..Secret::default()
            })
            .collect())
    }

    /// Writes a secret; `create` refuses an existing one, otherwise a missing one is refused.
    pub(super) fn write(&self, secret: &Secret, create: bool) -> Result<(), GatewayError> {
        let namespace = secret.namespace.as_deref().unwrap_or_default();
        let file = self.file(namespace, &secret.name);
        match (create, file.exists()) {
            (true, true) => {
                return Err(GatewayError::SecretExists {
                    name: secret.name.clone(),
                    namespace: namespace.to_owned(),
                });
            }
            (false, false) => return Err(not_found(&secret.name, namespace)),
            _ => {}
        }
        self.state
            .write_private(&file, secret.content())
            .map_err(|e| GatewayError::internal("storing a secret failed", e))
    }

    /// Removes a secret.
    pub(super) fn delete(&self, name: &str, namespace: &str) -> Result<(), GatewayError> {
        let file = self.file(namespace, name);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found(name, namespace)),
            Err(e) => Err(io_error("remove the secret", &file, e)),
        }
    }

    /// Gives function `name` copies of exactly the secrets it names, replacing what it had;
    /// [`GatewayError::MissingSecrets`] (and nothing changed) when some do not exist.
    pub(super) fn install(
        &self,
        namespace: &str,
        name: &str,
        secrets: &[String],
    ) -> Result<(), GatewayError> {
        let missing: Vec<String> = secrets
            .iter()
            .filter(|s| {
                crate::model::validate_secret_name(s).is_err() || !self.file(namespace, s).is_file()
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(GatewayError::MissingSecrets {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                missing,
            });
        }
        let mount = self.mount_path(namespace, name);
        remove_dir(&mount)?;
        self.state
            .folder(&mount)
            .map_err(|e| GatewayError::internal("preparing a function's secrets failed", e))?;
        for secret in secrets {
            let from = self.file(namespace, secret);
            let content = std::fs::read(&from).map_err(|e| io_error("read", &from, e))?;
            self.state
                .write_private(&mount.join(secret), &content)
                .map_err(|e| GatewayError::internal("copying a secret failed", e))?;
        }
        Ok(())
    }

    /// Removes function `name`'s folder (its secrets and captured logs).
    pub(super) fn forget_function(&self, namespace: &str, name: &str) -> Result<(), GatewayError> {
        remove_dir(&self.state.function(namespace, name))
    }
}

fn remove_dir(dir: &Path) -> Result<(), GatewayError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", dir, e)),
    }
}

fn not_found(name: &str, namespace: &str) -> GatewayError {
    GatewayError::SecretNotFound {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> GatewayError {
    GatewayError::internal(format!("cannot {what} {}", path.display()), e)
}

impl super::LocalProvider {
    /// Runs a blocking secret-store call off the async threads.
    pub(super) async fn with_secrets<T: Send + 'static>(
        &self,
        call: impl FnOnce(&SecretStore) -> Result<T, GatewayError> + Send + 'static,
    ) -> Result<T, GatewayError> {
        let store = self.inner.secrets.clone();
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .map_err(|e| GatewayError::internal("the secret store failed", e))?
    }

    /// Gives a function copies of the secrets it names (400 when some are missing).
    pub(super) async fn install_secrets(
        &self,
        spec: &FunctionDeployment,
    ) -> Result<(), GatewayError> {
        let namespace = spec.namespace_or_default().to_owned();
        let name = spec.service.clone();
        let secrets = spec.secrets.clone();
        self.with_secrets(move |s| s.install(&namespace, &name, &secrets))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn secret(name: &str, value: &str) -> Secret {
        Secret {
            name: name.into(),
            namespace: Some("openfaas-fn".into()),
            value: Some(value.into()),
            raw_value: None,
        }
    }

    #[test]
    fn secrets_are_private_files_and_functions_get_only_theirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::new(StateDir::open(Some(tmp.path())).expect("state"));
        store.write(&secret("db", "pw1"), true).expect("creates");
        store.write(&secret("api", "k"), true).expect("creates");
        assert!(matches!(
            store.write(&secret("db", "x"), true),
            Err(GatewayError::SecretExists { .. })
        ));
        assert!(matches!(
            store.write(&secret("nope", "x"), false),
            Err(GatewayError::SecretNotFound { .. })
        ));
        store.write(&secret("db", "pw2"), false).expect("updates");
        let names: Vec<String> = store
            .list("openfaas-fn")
            .expect("lists")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["api", "db"]);

        store
            .install("openfaas-fn", "f", &["db".into()])
            .expect("installs");
        let mount = store.mount_path("openfaas-fn", "f");
        assert_eq!(std::fs::read(mount.join("db")).expect("copied"), b"pw2");
        assert!(!mount.join("api").exists(), "only the secrets it names");
        let mode = std::fs::metadata(mount.join("db"))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let err = store
            .install("openfaas-fn", "f", &["db".into(), "ghost".into()])
            .expect_err("missing");
        assert!(err.to_string().contains("ghost"), "{err}");
        assert!(
            mount.join("db").exists(),
            "a refused install changes nothing"
        );

        store.delete("db", "openfaas-fn").expect("deletes");
        assert!(matches!(
            store.delete("db", "openfaas-fn"),
            Err(GatewayError::SecretNotFound { .. })
        ));
        store.forget_function("openfaas-fn", "f").expect("forgets");
        assert!(!mount.exists());
    }
}
