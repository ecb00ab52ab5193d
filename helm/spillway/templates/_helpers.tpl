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

{{/* Name of the ConfigMap of the daemon's settings file. */}}
{{- define "spillway.settingsConfigMap" -}}
{{- printf "%s-settings" (include "spillway.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
The daemon's settings file (`scaler run --config`), built from the values in scaler's grouped form
(one mapping per section, `kafka: {group_id: ...}`; scaler/settings.py SECTIONS): every setting but
the secrets, which scaler refuses in a file and which arrive from Secrets (mounted files, secretKeyRef
env vars). The pod name is the Kafka client id (an env var from the downward API, which overrides the
file).
*/}}
{{- define "spillway.settings" -}}
{{- $v := .Values }}
{{- $kafka := dict
  "bootstrap_servers" $v.kafka.bootstrapServers
  "group_id" $v.kafka.groupId
  "requests_topic" $v.kafka.topics.requests
  "metrics_topic" $v.kafka.topics.metrics
  "decisions_topic" $v.kafka.topics.decisions
  "deadletter_topic" $v.kafka.topics.deadletter
  "state_topic" $v.kafka.topics.state
  "create_topics" $v.kafka.createTopics
  "topic_partitions" $v.kafka.topicPartitions
  "session_timeout_ms" $v.kafka.sessionTimeoutMs
  "security_protocol" $v.kafka.securityProtocol
}}
{{- if hasPrefix "SASL" $v.kafka.securityProtocol }}
{{- $_ := set $kafka "sasl_mechanism" $v.kafka.sasl.mechanism }}
{{- $_ := set $kafka "sasl_username" $v.kafka.sasl.username }}
{{- $_ := set $kafka "sasl_password_file" "/etc/spillway/kafka-sasl/password" }}
{{- end }}
{{- if $v.kafka.tls.existingSecret }}
{{- $_ := set $kafka "ssl_cafile" "/etc/spillway/kafka-tls/ca.crt" }}
{{- if $v.kafka.tls.certKey }}
{{- $_ := set $kafka "ssl_certfile" "/etc/spillway/kafka-tls/tls.crt" }}
{{- $_ := set $kafka "ssl_keyfile" "/etc/spillway/kafka-tls/tls.key" }}
{{- end }}
{{- end }}
{{- $s := dict
  "log_level" $v.logLevel
  "actuate" $v.actuate
  "dry_run" $v.dryRun
  "http" (dict "listen" (printf "0.0.0.0:%v" $v.http.port))
  "kubernetes" (dict "in_cluster" true)
  "lease" (dict
    "fencing" $v.fencing.leases
    "namespace" .Release.Namespace
    "name_prefix" (include "spillway.leasePrefix" .)
    "duration_seconds" $v.fencing.durationSeconds
    "renew_seconds" $v.fencing.renewSeconds
    "margin_seconds" $v.fencing.marginSeconds)
  "actuator" (dict
    "timeout_seconds" $v.actuator.timeoutSeconds
    "attempts" $v.actuator.attempts
    "min_interval_seconds" $v.actuator.minIntervalSeconds
    "failure_threshold" $v.actuator.failureThreshold)
  "policy" (dict
    "files" (splitList "," (include "spillway.policyFiles" .))
    "poll_seconds" $v.policies.pollSeconds)
  "kafka" $kafka
}}
{{- if $v.keda.enabled }}
{{- $keda := dict "listen" (printf "0.0.0.0:%v" $v.keda.port) }}
{{- if $v.keda.tls.existingSecret }}
{{- $_ := set $keda "tls_certfile" "/etc/spillway/keda-tls/tls.crt" }}
{{- $_ := set $keda "tls_keyfile" "/etc/spillway/keda-tls/tls.key" }}
{{- if $v.keda.tls.clientCaKey }}
{{- $_ := set $keda "tls_client_cafile" "/etc/spillway/keda-tls/client-ca.crt" }}
{{- end }}
{{- end }}
{{- $_ := set $s "keda" $keda }}
{{- end }}
{{- with $v.prometheus.url }}
{{- $_ := set $s "prometheus" (dict "url" .) }}
{{- end }}
{{- if $v.alerts.existingSecret }}
{{- $_ := set $s "alerts" (dict "token_file" "/etc/spillway/alerts/token") }}
{{- end }}
{{- $aws := dict }}
{{- with $v.aws.endpointUrl }}
{{- $_ := set $aws "endpoint_url" . }}
{{- end }}
{{- with $v.aws.region }}
{{- $_ := set $aws "region" . }}
{{- end }}
{{- if $aws }}
{{- $_ := set $s "aws" $aws }}
{{- end }}
{{- toYaml $s }}
{{- end }}
