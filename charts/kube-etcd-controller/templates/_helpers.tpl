{{/* Name of every object of the release. */}}
{{- define "kec.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "kec.labels" -}}
app.kubernetes.io/name: {{ include "kec.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kube-etcd-controller
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* The controller pods' selector in its Deployment (immutable: the same as the hand-written manifest had). The
names of the pods the controller makes are refused: its selector would take in member or sidecar pods. */}}
{{- define "kec.selector" -}}
{{- if has (include "kec.fullname" .) (list "etcd" "etcd-backup-sidecar") }}
{{- fail (printf "the release cannot be named %q (the name of the pods it makes): use another name or fullnameOverride" (include "kec.fullname" .)) }}
{{- end }}
app.kubernetes.io/name: {{ include "kec.fullname" . }}
{{- end -}}

{{/* The controller pods' selector in the Service, the budget, the NetworkPolicy and the spread (these can change):
only this release's controller pods, never a pod the controller makes. */}}
{{- define "kec.podSelector" -}}
{{ include "kec.selector" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: kube-etcd-controller
{{- end -}}

{{- define "kec.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/*
The controller's permissions on namespaced resources: a ClusterRole's rules (scope cluster) or a Role's (scope
namespace). Every rule is a row of controller/src/rbac.rs (API_CALLS), which names the calls that need it; a unit
test holds the rendered manifests to that table both ways.
*/}}
{{- define "kec.namespacedRules" -}}
- apiGroups: ["kube-etcd-controller.dev"]
  resources: ["etcdclusters"]
  verbs: ["list", "watch"]
- apiGroups: ["kube-etcd-controller.dev"]
  resources: ["etcdclusters/status"]
  verbs: ["get", "patch"]
# Member pods: created, deleted, and patched in place (the image of a rolling upgrade).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Member claims (spec.storage): made before their pods, annotated, and deleted per the retention policy.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The backup sidecar's Deployment.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The CA bundles member pods read at start, pinned in immutable ConfigMaps (public certificates only).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "delete"]
# The sidecar's token Secret (created, read, deleted with the sidecar), a restore token Secret a user opted in
# (label kube-etcd-controller.dev/restore-token=true), and the TLS Secrets (read; the generated ones created, and
# replaced as read when renewed or when their CA is rotated): never listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "update", "delete"]
# The clusters' NetworkPolicies (spec.networkPolicy): applied, and deleted when turned off.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* The cluster-wide reads: a member on a node that is not Ready may serve behind a partition; whether a member
claim can be expanded when spec.storage.size grows. */}}
{{- define "kec.clusterRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get"]
{{- end -}}
