//! What the proto definitions do not say about Go's JSON: which fields are
//! embedded structs ([`inline`]) and which non-pointer `omitempty` integer
//! and boolean fields kube leaves out when zero ([`omitted_when_zero`]).
//!
//! The wire cannot tell them apart from pointer fields: gogo-protobuf writes
//! a non-pointer field always and a pointer field whenever it is set, so a
//! zero arrives either way. [`crate::decode`] keeps zeros (lossless: Go reads
//! a non-pointer zero as unset anyway, and a pointer's zero, `replicas: 0`,
//! matters) except for the fields listed here, which kube leaves out of its
//! JSON when zero. A field missing from this list costs only a visible `0` or
//! `false`; a pointer field must never be listed.

/// (message name without its package, field).
const FIELDS: &[(&str, &[&str])] = &[
    ("ObjectMeta", &["generation"]),
    ("Container", &["stdin", "stdinOnce", "tty"]),
    ("EphemeralContainerCommon", &["stdin", "stdinOnce", "tty"]),
    ("ContainerPort", &["hostPort"]),
    ("PodSpec", &["hostNetwork", "hostPID", "hostIPC"]),
    (
        "Probe",
        &[
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ],
    ),
    ("VolumeMount", &["readOnly"]),
    (
        "ServiceSpec",
        &["healthCheckNodePort", "publishNotReadyAddresses"],
    ),
    ("ServicePort", &["nodePort"]),
    ("NodeSpec", &["unschedulable"]),
    ("ContainerStateTerminated", &["signal"]),
    ("Event", &["count", "deprecatedCount"]),
    ("DeploymentSpec", &["minReadySeconds", "paused"]),
    (
        "DeploymentStatus",
        &[
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ],
    ),
    ("ReplicaSetSpec", &["minReadySeconds"]),
    (
        "ReplicaSetStatus",
        &[
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
        ],
    ),
    ("StatefulSetSpec", &["minReadySeconds"]),
    (
        "StatefulSetStatus",
        &[
            "observedGeneration",
            "readyReplicas",
            "currentReplicas",
            "updatedReplicas",
            "availableReplicas",
        ],
    ),
    ("DaemonSetSpec", &["minReadySeconds"]),
    (
        "DaemonSetStatus",
        &[
            "observedGeneration",
            "updatedNumberScheduled",
            "numberAvailable",
            "numberUnavailable",
        ],
    ),
    ("JobStatus", &["active", "succeeded", "failed"]),
];

/// Whether `field` of `message` (a full name) is left out when zero.
pub fn omitted_when_zero(message: &str, field: &str) -> bool {
    let short = message.rsplit('.').next().unwrap_or(message);
    FIELDS
        .iter()
        .any(|(m, fields)| *m == short && fields.contains(&field))
}

/// Go structs embedded with `json:",inline"`: their fields appear in the
/// parent's JSON object, while the proto has a field for the embedded struct.
/// (message name without its package, field).
const INLINE: &[(&str, &str)] = &[
    ("Probe", "handler"),
    ("Volume", "volumeSource"),
    ("PersistentVolumeSpec", "persistentVolumeSource"),
    ("EphemeralContainer", "ephemeralContainerCommon"),
    ("IngressRule", "ingressRuleValue"),
    ("RuleWithOperations", "rule"),
    ("ConfigMapVolumeSource", "localObjectReference"),
    ("ConfigMapKeySelector", "localObjectReference"),
    ("SecretKeySelector", "localObjectReference"),
    ("ConfigMapEnvSource", "localObjectReference"),
    ("SecretEnvSource", "localObjectReference"),
    ("ConfigMapProjection", "localObjectReference"),
    ("SecretProjection", "localObjectReference"),
    ("DeviceClaimConfiguration", "deviceConfiguration"),
    ("DeviceClassConfiguration", "deviceConfiguration"),
    ("DeviceAllocationConfiguration", "deviceConfiguration"),
];

/// Whether `field` of `message` (a full name) is an embedded struct.
pub fn inline(message: &str, field: &str) -> bool {
    let short = message.rsplit('.').next().unwrap_or(message);
    INLINE.iter().any(|(m, f)| *m == short && *f == field)
}
