//! Kubernetes YAML for `lab up -f` / `lab apply -f`: pods, services and network policies.
//!
//! Multi-document YAML is parsed into k8s-openapi types; an error names the file, the document
//! (1-based) and the field path, never panics. Anything else (Deployments, …) is rejected by kind
//! so a user is not left wondering why nothing happened.

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;

use crate::LabError;

/// One object the lab knows how to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum LabObject {
    Pod(Box<Pod>),
    Service(Box<Service>),
    NetworkPolicy(Box<NetworkPolicy>),
}

/// Parses every document of `text` (`file` is only used in error messages).
pub fn parse_objects(file: &str, text: &str) -> Result<Vec<LabObject>, LabError> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let error = |field: Option<String>, message: String| LabError::Objects {
            file: file.to_string(),
            document: number,
            field,
            message,
        };
        let value =
            serde_yaml_ng::Value::deserialize(document).map_err(|e| error(None, e.to_string()))?;
        if value.is_null() {
            continue; // an empty document (`---` at the end) is not an object
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| error(Some("kind".into()), "missing".into()))?;
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let expected_api = match kind {
            "Pod" | "Service" => "v1",
            "NetworkPolicy" => "networking.k8s.io/v1",
            other => {
                return Err(error(
                    Some("kind".into()),
                    format!("{other:?} is not supported by the lab (Pod, Service, NetworkPolicy)"),
                ))
            }
        };
        if api_version != expected_api {
            return Err(error(
                Some("apiVersion".into()),
                format!("{api_version:?} for {kind}; expected {expected_api:?}"),
            ));
        }
        let typed_error = |e: serde_path_to_error::Error<serde_yaml_ng::Error>| {
            error(Some(e.path().to_string()), e.inner().to_string())
        };
        let object = match kind {
            "Pod" => LabObject::Pod(Box::new(
                serde_path_to_error::deserialize(value).map_err(typed_error)?,
            )),
            "Service" => LabObject::Service(Box::new(
                serde_path_to_error::deserialize(value).map_err(typed_error)?,
            )),
            _ => LabObject::NetworkPolicy(Box::new(
                serde_path_to_error::deserialize(value).map_err(typed_error)?,
            )),
        };
        let name = match &object {
            LabObject::Pod(p) => &p.metadata.name,
            LabObject::Service(s) => &s.metadata.name,
            LabObject::NetworkPolicy(p) => &p.metadata.name,
        };
        if name.as_deref().unwrap_or_default().is_empty() {
            return Err(error(Some("metadata.name".into()), "missing".into()));
        }
        objects.push(object);
    }
    Ok(objects)
}

/// Reads and parses a YAML file.
pub fn read_objects(path: &std::path::Path) -> Result<Vec<LabObject>, LabError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LabError::io(format!("reading {}", path.display()), e))?;
    parse_objects(&path.display().to_string(), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml_into_typed_objects() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, ports: [{containerPort: 80}]}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n---\n";
        let objects = parse_objects("objs.yaml", text).expect("valid YAML");
        assert_eq!(objects.len(), 2);
        assert!(
            matches!(&objects[0], LabObject::Pod(p) if p.metadata.name.as_deref() == Some("web"))
        );
        assert!(matches!(&objects[1], LabObject::Service(_)));
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{port: eighty}]\n";
        let message = parse_objects("svc.yaml", text)
            .expect_err("port is not a number")
            .to_string();
        assert!(
            message.starts_with("svc.yaml: document 2, field `spec.ports[0].port`"),
            "{message}"
        );
    }

    #[test]
    fn unsupported_kind_is_rejected_by_name() {
        let message = parse_objects(
            "d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        )
        .expect_err("Deployment is not supported")
        .to_string();
        assert!(
            message.contains("\"Deployment\" is not supported"),
            "{message}"
        );
    }
}
