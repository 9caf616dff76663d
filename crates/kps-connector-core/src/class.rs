//! Packaging documents generated from the connector itself, so they never drift from the code:
//! the platform's connector class (CONTRACT.md "Packaging": name, version, type from the
//! directions, the three JSON Schemas, and `yamlData` with the Deployment and the Service) and
//! plain Kubernetes manifests for clusters without the platform.
//!
//! Every connector binary prints them with the hidden flags `--print-class` and
//! `--print-manifests` (see [`PrintOptions`](crate::options::PrintOptions)); `cargo xtask deploy`
//! writes them to `deploy/<name>/` and checks them for drift.
//!
//! The YAML is written by hand (no YAML library): a fixed shape with quoted strings.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::connector::{Connector, ConnectorInfo, Direction};
use crate::runtime::erased::{Erased, ErasedConnector};

/// The service domain version that introduced connectors.
pub const MIN_SVC_DOMAIN_VERSION: &str = "2.3.0";
/// Where the images are published unless another registry is given.
pub const DEFAULT_REGISTRY: &str = "ghcr.io/kps-connectors";
/// The platform's template value for the image tag.
pub const IMAGE_TAG_TEMPLATE: &str = "{{ .Parameters.image_tag }}";
/// The port of the gRPC contract in the container.
pub const GRPC_PORT: u16 = 8000;
/// The port of the mandatory Service, mapped to [`GRPC_PORT`].
pub const SERVICE_PORT: u16 = 9000;
/// The port of `/metrics`, `/healthz` and `/readyz` in the container.
pub const METRICS_PORT: u16 = 9102;
/// The unprivileged user (and group) the image runs as.
pub const RUN_AS_USER: u32 = 9999;
/// Where the container keeps its state (an `emptyDir`; the root filesystem is read-only).
pub const STATE_MOUNT: &str = "/var/lib/kps";

/// Why a packaging document could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    /// The connector declares no direction, so it has no class type.
    #[error("connector `{0}` supports no direction")]
    NoDirection(String),
    /// A schema could not be serialized.
    #[error("cannot serialize the connector class: {0}")]
    Json(#[from] serde_json::Error),
}

/// The class `type`: which directions of streams the connector supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClassType {
    /// Ingress streams only.
    Ingress,
    /// Egress streams only.
    Egress,
    /// Both.
    Bidirectional,
}

impl ClassType {
    /// The type of a connector supporting `directions`.
    pub fn from_directions(directions: &[Direction]) -> Option<ClassType> {
        let ingress = directions.contains(&Direction::Ingress);
        let egress = directions.contains(&Direction::Egress);
        match (ingress, egress) {
            (true, true) => Some(ClassType::Bidirectional),
            (true, false) => Some(ClassType::Ingress),
            (false, true) => Some(ClassType::Egress),
            (false, false) => None,
        }
    }
}

/// The connector class document the platform registers (CONTRACT.md "Packaging").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorClass {
    /// The class name: `kps-connector-<name>`.
    pub name: String,
    /// One line for people.
    pub description: String,
    /// The connector's version.
    pub connector_version: String,
    /// [`MIN_SVC_DOMAIN_VERSION`].
    pub min_svc_domain_version: String,
    /// INGRESS, EGRESS or BIDIRECTIONAL, from the directions.
    #[serde(rename = "type")]
    pub class_type: ClassType,
    /// The template values of `yamlData` (`image_tag`).
    pub static_parameter_schema: Value,
    /// The dynamic config's schema.
    pub config_parameter_schema: Value,
    /// One stream's metadata schema, from the connector's `Params` type.
    pub stream_parameter_schema: Value,
    /// The Kubernetes resources: the Deployment and the Service, as multi-document YAML.
    pub yaml_data: String,
}

impl ConnectorClass {
    /// The class of `connector`, its image in `registry`.
    pub fn of<C: Connector>(connector: C, registry: &str) -> Result<ConnectorClass, ClassError> {
        Self::of_erased(&Erased(std::sync::Arc::new(connector)), registry)
    }

    /// The class of a type-erased connector, its image in `registry`.
    pub fn of_erased(
        connector: &dyn ErasedConnector,
        registry: &str,
    ) -> Result<ConnectorClass, ClassError> {
        let info = connector.info();
        let class_type = ClassType::from_directions(info.directions)
            .ok_or_else(|| ClassError::NoDirection(info.name.to_owned()))?;
        let resources = Resources::new(&info, registry);
        Ok(ConnectorClass {
            name: resources.app.clone(),
            description: info.description.to_owned(),
            connector_version: info.version.to_owned(),
            min_svc_domain_version: MIN_SVC_DOMAIN_VERSION.to_owned(),
            class_type,
            static_parameter_schema: static_parameter_schema(&info, registry),
            config_parameter_schema: platform_schema(connector.config_schema().to_value()),
            stream_parameter_schema: platform_schema(connector.stream_schema().to_value()),
            yaml_data: resources.platform_yaml(),
        })
    }

    /// The class as pretty JSON (keys of the schemas sorted, so the text is stable), ending with
    /// a newline.
    pub fn to_json(&self) -> Result<String, ClassError> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        Ok(text)
    }
}

/// Plain Kubernetes manifests (the Deployment and the Service) for a cluster without the
/// platform: the image tagged with the connector's version, and the environment the platform
/// would inject set explicitly (edit `CONNECTOR_INSTANCE_ID` and `NATS_BROKER`).
pub fn kubernetes_manifests(info: &ConnectorInfo, registry: &str) -> String {
    Resources::new(info, registry).plain_yaml()
}

/// The schema of the class's template values.
fn static_parameter_schema(info: &ConnectorInfo, registry: &str) -> Value {
    let description = format!(
        "the tag of the image {registry}/kps-connector-{}, e.g. {}",
        info.name, info.version
    );
    serde_json::json!({
        "type": "object",
        "properties": {
            "image_tag": {
                "type": "string",
                "description": description,
                "default": info.version,
                "minLength": 1
            }
        },
        "required": ["image_tag"]
    })
}

/// A schema as the platform takes it: self-contained (local `$ref`s to `$defs` inlined, unless
/// a type is recursive), without the `$schema` keyword, keys sorted.
pub fn platform_schema(schema: Value) -> Value {
    let defs = match &schema {
        Value::Object(map) => map
            .get("$defs")
            .or_else(|| map.get("definitions"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        _ => Map::new(),
    };
    let mut result = match inline_refs(schema.clone(), &defs, &mut Vec::new()) {
        Some(Value::Object(mut map)) => {
            map.remove("$defs");
            map.remove("definitions");
            Value::Object(map)
        }
        Some(other) => other,
        // A recursive type keeps its references and definitions.
        None => schema,
    };
    if let Value::Object(map) = &mut result {
        map.remove("$schema");
    }
    sorted(result)
}

/// Replaces `{"$ref": "#/$defs/X", ...}` by the definition of X (merged with the sibling
/// keywords); `None` when a reference is recursive.
fn inline_refs(value: Value, defs: &Map<String, Value>, seen: &mut Vec<String>) -> Option<Value> {
    match value {
        Value::Object(mut map) => {
            if let Some(Value::String(reference)) = map.get("$ref").cloned() {
                let name = reference
                    .strip_prefix("#/$defs/")
                    .or_else(|| reference.strip_prefix("#/definitions/"))
                    .unwrap_or_default()
                    .to_owned();
                if let Some(definition) = defs.get(&name) {
                    if seen.contains(&name) {
                        return None;
                    }
                    seen.push(name);
                    let resolved = inline_refs(definition.clone(), defs, seen);
                    seen.pop();
                    map.remove("$ref");
                    let Value::Object(mut merged) = resolved? else {
                        return None;
                    };
                    // Sibling keywords (a field's description, default) win over the definition's.
                    for (key, value) in map {
                        merged.insert(key, inline_refs(value, defs, seen)?);
                    }
                    return Some(Value::Object(merged));
                }
            }
            let mut out = Map::new();
            for (key, value) in map {
                if key == "$defs" || key == "definitions" {
                    out.insert(key, value);
                } else {
                    out.insert(key, inline_refs(value, defs, seen)?);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => items
            .into_iter()
            .map(|item| inline_refs(item, defs, seen))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        other => Some(other),
    }
}

/// `value` with every object's keys in sorted order, whatever serde_json's map type is.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// What the Kubernetes resources of one connector are made of.
struct Resources {
    /// `kps-connector-<name>`: the Deployment, the container's image and the app label.
    app: String,
    /// `<registry>/kps-connector-<name>`.
    repository: String,
    /// The connector's name.
    name: String,
    /// The connector's version.
    version: String,
}

impl Resources {
    fn new(info: &ConnectorInfo, registry: &str) -> Resources {
        let app = format!("kps-connector-{}", info.name);
        Resources {
            repository: format!("{}/{app}", registry.trim_end_matches('/')),
            app,
            name: info.name.to_owned(),
            version: info.version.to_owned(),
        }
    }

    /// The class's `yamlData`: the image tag is the template value, and the service domain
    /// injects `CONNECTOR_INSTANCE_ID`, `NATS_BROKER` and `NATS_NAME`.
    fn platform_yaml(&self) -> String {
        let env = "            # CONNECTOR_INSTANCE_ID, NATS_BROKER and NATS_NAME are set by the service domain\n";
        format!(
            "{}---\n{}",
            self.deployment(IMAGE_TAG_TEMPLATE, env),
            self.service()
        )
    }

    /// Plain manifests: the image tag is the version, the platform's variables set explicitly.
    fn plain_yaml(&self) -> String {
        let env = format!(
            "            - name: CONNECTOR_INSTANCE_ID # the id every request must carry (kpsctl --connector-id)\n\
             \x20             value: \"{name}-1\"\n\
             \x20           - name: NATS_BROKER\n\
             \x20             value: \"nats://nats:4222\"\n\
             \x20           - name: NATS_NAME\n\
             \x20             valueFrom:\n\
             \x20               fieldRef:\n\
             \x20                 fieldPath: metadata.name\n",
            name = self.name
        );
        format!(
            "# {app} {version}: plain Kubernetes manifests (generated by `cargo xtask deploy`)\n\
             {deployment}---\n{service}",
            app = self.app,
            version = self.version,
            deployment = self.deployment(&self.version, &env),
            service = self.service()
        )
    }

    /// The Deployment, with `env` lines (already indented) before the common variables.
    fn deployment(&self, tag: &str, env: &str) -> String {
        format!(
            "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
  labels:
    app.kubernetes.io/name: {app}
    app.kubernetes.io/part-of: kps-connectors
    app.kubernetes.io/version: \"{version}\"
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {app}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {app}
        app.kubernetes.io/part-of: kps-connectors
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: {uid}
        runAsGroup: {uid}
        fsGroup: {uid}
      containers:
        - name: connector
          image: \"{repository}:{tag}\"
          imagePullPolicy: IfNotPresent
          ports:
            - name: grpc
              containerPort: {grpc}
              protocol: TCP
            - name: metrics
              containerPort: {metrics}
              protocol: TCP
          env:
{env}            - name: CONNECTOR_STATE_DIR
              value: \"{state}/state\"
            - name: CONNECTOR_LOG_FORMAT
              value: \"json\"
          securityContext:
            runAsNonRoot: true
            runAsUser: {uid}
            runAsGroup: {uid}
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities:
              drop: [\"ALL\"]
          livenessProbe:
            httpGet:
              path: /healthz
              port: {metrics}
            initialDelaySeconds: 5
            periodSeconds: 10
          readinessProbe:
            httpGet:
              path: /readyz
              port: {metrics}
            periodSeconds: 5
          resources:
            requests:
              cpu: \"50m\"
              memory: \"32Mi\"
            limits:
              cpu: \"1\"
              memory: \"256Mi\"
          volumeMounts:
            - name: state
              mountPath: {state}
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: state
          emptyDir: {{}}
        - name: tmp
          emptyDir: {{}}
",
            app = self.app,
            version = self.version,
            repository = self.repository,
            uid = RUN_AS_USER,
            grpc = GRPC_PORT,
            metrics = METRICS_PORT,
            state = STATE_MOUNT,
        )
    }

    /// The mandatory Service: port 9000 to the container's 8000.
    fn service(&self) -> String {
        format!(
            "\
apiVersion: v1
kind: Service
metadata:
  name: {app}-svc
  labels:
    app.kubernetes.io/name: {app}
    app.kubernetes.io/part-of: kps-connectors
spec:
  selector:
    app.kubernetes.io/name: {app}
  ports:
    - name: grpc
      protocol: TCP
      port: {service}
      targetPort: {grpc}
",
            app = self.app,
            service = SERVICE_PORT,
            grpc = GRPC_PORT,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Direction;
    use serde_json::json;

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        /// The file.
        path: String,
        /// Where to start.
        #[serde(default)]
        start: Start,
    }

    #[derive(Default, serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Start {
        /// The first line.
        #[default]
        Beginning,
        /// New lines only.
        End,
    }

    struct Demo(&'static [Direction]);

    #[async_trait::async_trait]
    impl Connector for Demo {
        type Params = Params;
        fn info(&self) -> ConnectorInfo {
            ConnectorInfo {
                name: "demo",
                description: "a demo \"connector\"",
                version: "1.2.3",
                directions: self.0,
            }
        }
    }

    fn class(directions: &'static [Direction]) -> ConnectorClass {
        ConnectorClass::of(Demo(directions), "registry.example/kps").unwrap()
    }

    #[test]
    fn type_follows_the_directions() {
        use Direction::{Egress, Ingress};
        assert_eq!(class(&[Ingress]).class_type, ClassType::Ingress);
        assert_eq!(class(&[Egress]).class_type, ClassType::Egress);
        assert_eq!(
            class(&[Egress, Ingress]).class_type,
            ClassType::Bidirectional
        );
        let err = ConnectorClass::of(Demo(&[]), DEFAULT_REGISTRY).unwrap_err();
        assert_eq!(err.to_string(), "connector `demo` supports no direction");
    }

    #[test]
    fn the_document_has_the_platform_fields() {
        let text = class(&[Direction::Ingress, Direction::Egress])
            .to_json()
            .unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "name",
            "description",
            "connectorVersion",
            "minSvcDomainVersion",
            "type",
            "staticParameterSchema",
            "configParameterSchema",
            "streamParameterSchema",
            "yamlData",
        ] {
            assert!(keys.contains(&key), "{key} missing in {keys:?}");
        }
        assert_eq!(doc["name"], "kps-connector-demo");
        assert_eq!(doc["description"], "a demo \"connector\"");
        assert_eq!(doc["connectorVersion"], "1.2.3");
        assert_eq!(doc["minSvcDomainVersion"], "2.3.0");
        assert_eq!(doc["type"], "BIDIRECTIONAL");
        assert_eq!(
            doc["staticParameterSchema"]["properties"]["image_tag"]["type"],
            "string"
        );
        assert_eq!(
            doc["staticParameterSchema"]["required"],
            json!(["image_tag"])
        );
        assert_eq!(
            doc["configParameterSchema"]["properties"]["log_level"]["type"],
            "string"
        );
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn the_stream_schema_is_self_contained() {
        let schema = class(&[Direction::Ingress]).stream_parameter_schema;
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!(["path"]));
        assert_eq!(schema["properties"]["path"]["description"], "The file.");
        let text = schema.to_string();
        assert!(!text.contains("$ref"), "{text}");
        assert!(!text.contains("$defs"), "{text}");
        assert!(!text.contains("$schema"), "{text}");
        // The enum's variants were inlined, and the field's own description kept.
        let start = &schema["properties"]["start"];
        assert_eq!(start["description"], "Where to start.");
        assert!(start.to_string().contains("\"beginning\""), "{start}");
    }

    #[test]
    fn recursive_definitions_are_kept() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"node": {"$ref": "#/$defs/Node"}},
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}
        });
        let platform = platform_schema(schema);
        assert_eq!(platform["properties"]["node"]["$ref"], "#/$defs/Node");
        assert!(platform["$defs"]["Node"].is_object());
        assert!(platform.get("$schema").is_none());
    }

    #[test]
    fn keys_are_sorted_at_every_level() {
        let value = sorted(json!({"b": {"z": 1, "a": 2}, "a": [{"y": 1, "x": 2}]}));
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"a":[{"x":2,"y":1}],"b":{"a":2,"z":1}}"#
        );
    }

    /// The documents of a YAML stream, each as (indent, key, value) lines; checks the shape a
    /// YAML parser needs: spaces only, even indentation, `key: value` or `- ` items.
    fn yaml_documents(text: &str) -> Vec<Vec<(usize, String)>> {
        let mut documents = vec![Vec::new()];
        for line in text.lines() {
            assert!(!line.contains('\t'), "tab in {line:?}");
            assert_eq!(line, line.trim_end(), "trailing space in {line:?}");
            if line == "---" {
                documents.push(Vec::new());
                continue;
            }
            let content = line.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let indent = line.len() - content.len();
            assert_eq!(indent % 2, 0, "odd indentation in {line:?}");
            let item = content.strip_prefix("- ").unwrap_or(content);
            assert!(
                item.contains(": ") || item.ends_with(':'),
                "not a mapping entry: {line:?}"
            );
            if let Some(quoted) = item.split_once(": ").map(|(_, v)| v) {
                let value = quoted.split(" #").next().unwrap_or(quoted);
                if value.starts_with('"') {
                    assert!(
                        value.ends_with('"') && value.len() >= 2,
                        "unclosed {line:?}"
                    );
                }
                assert!(
                    !value.starts_with('{') || value == "{}",
                    "flow mapping in {line:?}"
                );
            }
            documents
                .last_mut()
                .unwrap()
                .push((indent, content.to_owned()));
        }
        documents
    }

    fn has(document: &[(usize, String)], indent: usize, line: &str) -> bool {
        document.iter().any(|(i, l)| *i == indent && l == line)
    }

    #[test]
    fn yaml_data_holds_the_deployment_and_the_service() {
        let yaml = class(&[Direction::Ingress]).yaml_data;
        let docs = yaml_documents(&yaml);
        assert_eq!(docs.len(), 2, "{yaml}");
        let (deployment, service) = (&docs[0], &docs[1]);
        assert!(has(deployment, 0, "kind: Deployment"));
        assert!(has(
            deployment,
            10,
            "image: \"registry.example/kps/kps-connector-demo:{{ .Parameters.image_tag }}\""
        ));
        assert!(has(deployment, 12, "- name: grpc"));
        assert!(has(deployment, 14, "containerPort: 8000"));
        assert!(has(deployment, 14, "containerPort: 9102"));
        assert!(has(deployment, 8, "runAsNonRoot: true"));
        assert!(has(deployment, 12, "runAsUser: 9999"));
        assert!(has(deployment, 12, "readOnlyRootFilesystem: true"));
        assert!(has(deployment, 14, "path: /healthz"));
        assert!(has(deployment, 14, "path: /readyz"));
        assert!(has(deployment, 14, "port: 9102"));
        assert!(has(deployment, 12, "requests:"));
        assert!(has(deployment, 12, "limits:"));
        assert!(yaml.contains("NATS_BROKER and NATS_NAME are set by the service domain"));
        assert!(has(service, 0, "kind: Service"));
        assert!(has(service, 6, "port: 9000"));
        assert!(has(service, 6, "targetPort: 8000"));
        assert!(has(
            service,
            4,
            "app.kubernetes.io/name: kps-connector-demo"
        ));
    }

    #[test]
    fn plain_manifests_set_the_platform_variables() {
        let info = Demo(&[Direction::Egress]).info();
        let yaml = kubernetes_manifests(&info, DEFAULT_REGISTRY);
        let docs = yaml_documents(&yaml);
        assert_eq!(docs.len(), 2, "{yaml}");
        assert!(has(
            &docs[0],
            10,
            "image: \"ghcr.io/kps-connectors/kps-connector-demo:1.2.3\""
        ));
        for name in ["CONNECTOR_INSTANCE_ID", "NATS_BROKER", "NATS_NAME"] {
            assert!(yaml.contains(&format!("- name: {name}")), "{name}");
        }
        assert!(!yaml.contains("{{"), "no template left: {yaml}");
    }
}
