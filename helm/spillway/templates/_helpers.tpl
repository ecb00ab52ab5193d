{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "spillway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "spillway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "spillway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spillway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "spillway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "spillway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: autoscaler
{{- end }}

{{- define "spillway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spillway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spillway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the ConfigMap of policies. */}}
{{- define "spillway.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "spillway.fullname" .)) .Values.policies.existingConfigMap }}
{{- end }}

{{/* Comma-separated paths of the policy files in the mounted ConfigMap. */}}
{{- define "spillway.policyFiles" -}}
{{- $keys := list }}
{{- if .Values.policies.existingConfigMap }}
{{- $keys = .Values.policies.existingConfigMapKeys }}
{{- else }}
{{- $keys = keys .Values.policies.files | sortAlpha }}
{{- end }}
{{- $paths := list }}
{{- range $keys }}
{{- $paths = append $paths (printf "/etc/spillway/policies/%s" .) }}
{{- end }}
{{- join "," $paths }}
{{- end }}

{{/* Namespaces whose workloads are scaled. */}}
{{- define "spillway.targetNamespaces" -}}
{{- if .Values.rbac.namespaces }}
{{- join "," (uniq .Values.rbac.namespaces) }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* True ("true") when a ClusterRole is needed: only for several namespaces (one gets a Role there). */}}
{{- define "spillway.clusterScoped" -}}
{{- if gt (len (splitList "," (include "spillway.targetNamespaces" .))) 1 }}true{{ end }}
{{- end }}

{{/* The RBAC rules of files/rbac-rules.yaml, restricted by resourceNames when targets are listed. */}}
{{- define "spillway.rbacRules" -}}
{{- $targets := .Values.rbac.targets }}
{{- $known := or $targets.deployments $targets.statefulsets }}
{{- /* KEDA actuates: Spillway only reads the workloads, the scale write verbs are dropped */}}
{{- $readOnly := and .Values.keda.enabled .Values.keda.actuates }}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYamlArray }}
{{- range $rules }}
{{- $verbs := ternary (without .verbs "update" "patch") .verbs $readOnly }}
{{- if and .targets $known }}
{{- $rule := . }}
{{- range .resources }}
{{- $kind := index (splitList "/" .) 0 }}
{{- $names := index $targets $kind }}
{{- if $names }}
- apiGroups: {{ toJson $rule.apiGroups }}
  resources: [{{ . | quote }}]
  resourceNames: {{ toJson (uniq $names) }}
  verbs: {{ toJson $verbs }}
{{- end }}
{{- end }}
{{- else }}
- apiGroups: {{ toJson .apiGroups }}
  resources: {{ toJson .resources }}
  verbs: {{ toJson $verbs }}
{{- end }}
{{- end }}
{{- end }}

{{/* Lease name prefix of the fencing Leases (<prefix>-<partition>): the release's full name. */}}
{{- define "spillway.leasePrefix" -}}
{{- include "spillway.fullname" . | trunc 40 | trimSuffix "-" }}
{{- end }}
