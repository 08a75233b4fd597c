//! OpenFaaS stack files (`stack.yml`): parsing, `${VAR}` substitution and conversion to
//! deployments, with errors naming the file, line and field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::model::{FunctionDeployment, FunctionResources};

/// A stack file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The file could not be read.
    #[error("{path}: cannot read stack file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or a field has the wrong type.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A field has a value the local provider cannot use.
    #[error("{path}:{line}: function {function:?}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the function's entry.
        line: usize,
        /// The function.
        function: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// The parsed stack file.
#[derive(Debug, Clone, Deserialize)]
pub struct StackFile {
    /// Schema version, e.g. `1.0`.
    #[serde(default)]
    pub version: Option<Value>,
    /// Provider section.
    #[serde(default)]
    pub provider: Option<StackProvider>,
    /// Functions by name.
    #[serde(default)]
    pub functions: BTreeMap<String, StackFunction>,
}

/// The `provider:` section.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StackProvider {
    /// Provider name, e.g. `openfaas`.
    #[serde(default)]
    pub name: Option<String>,
    /// Gateway URL.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// One entry of `functions:`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StackFunction {
    /// Template language; ignored locally.
    #[serde(default)]
    pub lang: Option<String>,
    /// Handler folder; ignored locally.
    #[serde(default)]
    pub handler: Option<String>,
    /// Image; informational locally.
    #[serde(default)]
    pub image: Option<String>,
    /// The command (OpenFaaS `fprocess`).
    #[serde(default)]
    pub fprocess: Option<String>,
    /// The command, spelled as in the REST API; wins over `fprocess`.
    #[serde(default, rename = "envProcess")]
    pub env_process: Option<String>,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Environment variables (scalars of any type).
    #[serde(default)]
    pub environment: BTreeMap<String, Scalar>,
    /// Files whose `environment:` maps are merged in, relative to the stack file.
    #[serde(default)]
    pub environment_file: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, Scalar>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, Scalar>,
    /// Secret names.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Constraints.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Option<FunctionResources>,
    /// Resource requests.
    #[serde(default)]
    pub requests: Option<FunctionResources>,
    /// Read-only root filesystem.
    #[serde(default)]
    pub readonly_root_filesystem: bool,
}

/// Fields of a stack file's function that Tributary reads.
const FIELDS: [&str; 15] = [
    "lang",
    "handler",
    "image",
    "fprocess",
    "envProcess",
    "namespace",
    "environment",
    "environment_file",
    "labels",
    "annotations",
    "secrets",
    "constraints",
    "limits",
    "requests",
    "readonly_root_filesystem",
];

/// Fields faas-cli knows that only matter when building images: accepted and ignored.
const BUILD_FIELDS: [&str; 5] = [
    "skip_build",
    "build_args",
    "build_options",
    "build_secrets",
    "platforms",
];

/// The number of single-character edits between two short words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// A YAML scalar read as a string (`5`, `true` and `"x"` are all accepted, as faas-cli does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Self(s)),
            Value::Number(n) => Ok(Self(n.to_string())),
            Value::Bool(b) => Ok(Self(b.to_string())),
            Value::Null => Ok(Self(String::new())),
            _ => Err(serde::de::Error::custom(
                "expected a string, number or boolean",
            )),
        }
    }
}

#[derive(Deserialize)]
struct EnvFile {
    #[serde(default)]
    environment: BTreeMap<String, Scalar>,
}

/// A stack file together with where it was read from.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The file.
    pub path: PathBuf,
    /// Its text after `${VAR}` substitution.
    text: String,
    /// The parsed content.
    pub file: StackFile,
}

impl Stack {
    /// Reads and parses a stack file, substituting `${VAR}` and `${VAR:-default}` from the environment.
    pub fn load(path: &Path) -> Result<Self, StackError> {
        let raw = std::fs::read_to_string(path).map_err(|source| StackError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &raw)
    }

    /// Parses stack file text; `path` is used for messages and relative files.
    pub fn parse(path: &Path, raw: &str) -> Result<Self, StackError> {
        let text = substitute_env(raw, |k| std::env::var(k).ok());
        let file = parse_yaml::<StackFile>(path, &text)?;
        let stack = Self {
            path: path.to_owned(),
            text,
            file,
        };
        stack.check_fields()?;
        Ok(stack)
    }

    /// Refuses a function field nobody knows (a misspelt `enviroment:` would otherwise be
    /// ignored silently), naming it, its likely spelling and the known fields.
    fn check_fields(&self) -> Result<(), StackError> {
        let Ok(Value::Mapping(root)) = serde_yaml_ng::from_str::<Value>(&self.text) else {
            return Ok(());
        };
        let Some(Value::Mapping(functions)) = root.get("functions") else {
            return Ok(());
        };
        for (name, body) in functions {
            let (Value::String(name), Value::Mapping(body)) = (name, body) else {
                continue;
            };
            for key in body.keys().filter_map(Value::as_str) {
                if FIELDS.contains(&key) || BUILD_FIELDS.contains(&key) {
                    continue;
                }
                let hint = FIELDS
                    .iter()
                    .find(|known| edit_distance(key, known) <= 2)
                    .map(|known| format!(" (did you mean `{known}`?)"))
                    .unwrap_or_default();
                return Err(StackError::Invalid {
                    path: self.path.clone(),
                    line: self.line_of(name),
                    function: name.clone(),
                    message: format!(
                        "unknown field `{key}`{hint}; known fields: {}",
                        FIELDS.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The folder relative paths in the stack file are resolved against.
    pub fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    /// 1-based line where function `name` is declared (0 if not found).
    fn line_of(&self, name: &str) -> usize {
        let key = format!("{name}:");
        self.text
            .lines()
            .position(|l| {
                let t = l.trim_start();
                l.len() > t.len() && (t == key || t.starts_with(&format!("{key} ")))
            })
            .map_or(0, |i| i + 1)
    }

    /// Converts every function to a deployment for the gateway, validating what the local
    /// provider needs.
    pub fn deployments(&self) -> Result<Vec<FunctionDeployment>, StackError> {
        let mut out = Vec::new();
        for (name, f) in &self.file.functions {
            let invalid = |message: String| StackError::Invalid {
                path: self.path.clone(),
                line: self.line_of(name),
                function: name.clone(),
                message,
            };
            crate::model::validate_name("function", name).map_err(&invalid)?;
            let command = f
                .env_process
                .clone()
                .or_else(|| f.fprocess.clone())
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| {
                    invalid("field `fprocess` (or `envProcess`) is required: the command that runs the function".into())
                })?;
            let mut env = BTreeMap::new();
            for file in &f.environment_file {
                let p = self.dir().join(file);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    invalid(format!(
                        "field `environment_file`: cannot read {}: {e}",
                        p.display()
                    ))
                })?;
                let parsed: EnvFile = parse_yaml(&p, &text)
                    .map_err(|e| invalid(format!("field `environment_file`: {e}")))?;
                env.extend(parsed.environment.into_iter().map(|(k, v)| (k, v.0)));
            }
            env.extend(f.environment.iter().map(|(k, v)| (k.clone(), v.0.clone())));
            let map = |m: &BTreeMap<String, Scalar>| -> Option<BTreeMap<String, String>> {
                (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
            };
            out.push(FunctionDeployment {
                service: name.clone(),
                image: f.image.clone().unwrap_or_default(),
                namespace: f.namespace.clone().filter(|n| !n.is_empty()),
                env_process: Some(command),
                env_vars: env,
                constraints: f.constraints.clone(),
                secrets: f.secrets.clone(),
                labels: map(&f.labels),
                annotations: map(&f.annotations),
                limits: f.limits.clone(),
                requests: f.requests.clone(),
                read_only_root_filesystem: f.readonly_root_filesystem,
            });
        }
        Ok(out)
    }
}

fn parse_yaml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, StackError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let (line, column) = inner.location().map_or((0, 0), |l| (l.line(), l.column()));
        let mut message = inner.to_string();
        // serde_yaml_ng appends " at line L column C"; the prefix already says where.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        let message = if field.is_empty() || field == "." {
            message
        } else {
            format!("field `{field}`: {message}")
        };
        StackError::Parse {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })
}

/// Replaces `${VAR}` and `${VAR:-default}` like faas-cli's envsubst; `$$` stays literal.
pub fn substitute_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        let value = lookup(name).filter(|v| !v.is_empty() || default.is_none());
        out.push_str(&value.unwrap_or_else(|| default.unwrap_or("").to_owned()));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080
functions:
  hello:
    lang: dockerfile
    handler: ./hello
    image: hello:latest
    fprocess: sh ./hello.sh
    environment:
      retries: 3
      verbose: true
      greeting: ${GREETING:-hi}
    annotations:
      topic: payments,refunds
    labels:
      com.openfaas.scale.min: 2
  echo:
    envProcess: tributary echo
    namespace: dev
    environment:
      mode: http
"#;

    #[test]
    fn a_misspelt_field_is_named_with_the_known_ones() {
        let text = "functions:\n  hello:\n    fprocess: cat\n    skip_build: true\n    enviroment:\n      a: b\n";
        let err = Stack::parse(Path::new("s.yml"), text).expect_err("misspelt");
        let msg = err.to_string();
        assert!(msg.contains("s.yml:2:"), "{msg}");
        assert!(
            msg.contains("unknown field `enviroment` (did you mean `environment`?)"),
            "{msg}"
        );
        assert!(msg.contains("known fields: lang"), "{msg}");
        assert_eq!(edit_distance("lables", "labels"), 2);
    }

    #[test]
    fn parses_functions_into_deployments() {
        let stack = Stack::parse(Path::new("stack.yml"), GOOD).expect("parses");
        let d = stack.deployments().expect("valid");
        let hello = d.iter().find(|f| f.service == "hello").expect("hello");
        assert_eq!(hello.env_process.as_deref(), Some("sh ./hello.sh"));
        assert_eq!(hello.env_vars["retries"], "3");
        assert_eq!(hello.env_vars["verbose"], "true");
        assert_eq!(hello.env_vars["greeting"], "hi");
        assert_eq!(hello.label("com.openfaas.scale.min"), Some("2"));
        assert_eq!(
            hello.annotations.as_ref().expect("annotations")["topic"],
            "payments,refunds"
        );
        let echo = d.iter().find(|f| f.service == "echo").expect("echo");
        assert_eq!(echo.namespace.as_deref(), Some("dev"));
        assert_eq!(echo.env_vars["mode"], "http");
    }

    #[test]
    fn type_errors_name_file_line_and_field() {
        let bad = "functions:\n  hello:\n    fprocess: cat\n    environment:\n      - not-a-map\n";
        let err = Stack::parse(Path::new("my/stack.yml"), bad).expect_err("bad");
        let msg = err.to_string();
        assert!(msg.starts_with("my/stack.yml:5:"), "{msg}");
        assert!(msg.contains("functions.hello.environment"), "{msg}");
    }

    #[test]
    fn missing_command_names_the_function_line() {
        let text = "functions:\n  first:\n    fprocess: cat\n  second:\n    image: x\n";
        let stack = Stack::parse(Path::new("s.yml"), text).expect("parses");
        let msg = stack.deployments().expect_err("invalid").to_string();
        assert!(msg.starts_with("s.yml:4: function \"second\""), "{msg}");
        assert!(msg.contains("fprocess"), "{msg}");
    }

    #[test]
    fn envsubst_handles_defaults_and_missing() {
        let env = |k: &str| (k == "SET").then(|| "v".to_owned());
        assert_eq!(substitute_env("a ${SET} b", env), "a v b");
        assert_eq!(substitute_env("${UNSET:-d}", env), "d");
        assert_eq!(substitute_env("${UNSET}", env), "");
        assert_eq!(substitute_env("${SET:-d}", env), "v");
        assert_eq!(substitute_env("keep ${open", env), "keep ${open");
    }
}
