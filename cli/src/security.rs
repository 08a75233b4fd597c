//! What `gateway` and `up` say at start about who can reach what, and how in-process clients
//! authenticate.

use tributary_core::auth::AuthArgs;
use tributary_gateway::{CredentialSource, GatewayConfig, StateDir};

/// Logs how `/system/*` is protected (with the `faas-cli login` line for generated
/// credentials, or a warning when it is open) and returns how in-process clients authenticate.
pub fn announce(
    config: &GatewayConfig,
    state: &StateDir,
    source: Option<&CredentialSource>,
    port: u16,
) -> AuthArgs {
    let url = format!("http://{}", config.local_authority(port));
    tracing::info!(state_dir = %state.root().display(), "state directory");
    if config.callback_allow.is_open() {
        tracing::info!(
            "X-Callback-Url may name any host the gateway can reach; set callback_allow to list the allowed ones"
        );
    } else {
        tracing::info!(callback_allow = %config.callback_allow, "callbacks restricted");
    }
    match source {
        Some(CredentialSource::Generated { dir, created }) => {
            let password = dir.join(tributary_core::auth::PASSWORD_FILE);
            tracing::info!(
                user = tributary_gateway::auth::GENERATED_USER,
                password_file = %password.display(),
                generated_now = created,
                "basic auth is on (generated credentials); log in with: cat {} | faas-cli login --gateway {url} --username {} --password-stdin",
                password.display(),
                tributary_gateway::auth::GENERATED_USER,
            );
            AuthArgs {
                basic_auth: true,
                secret_mount_path: dir.clone(),
            }
        }
        Some(CredentialSource::SecretMount(dir)) => {
            tracing::info!(secret_mount_path = %dir.display(), "basic auth is on");
            config.auth.clone()
        }
        None => {
            let addr = config.listen_addr();
            let scope = if addr.ip().is_loopback() {
                "this machine's users"
            } else {
                "anyone who can reach it"
            };
            tracing::warn!(
                %addr,
                "basic_auth=false: /system/* is open to {scope}; they can deploy functions, which run commands as this user"
            );
            config.auth.clone()
        }
    }
}
