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
The daemon's settings file (`scaler run --config`), built from the values: every setting but the
secrets, which scaler refuses in a file and which arrive from Secrets (mounted files, secretKeyRef
env vars). Keys are scaler's setting names (scaler/settings.py); the pod name is the Kafka client id
(an env var from the downward API, which overrides the file).
*/}}
{{- define "spillway.settings" -}}
{{- $v := .Values }}
{{- $s := dict
  "http_listen" (printf "0.0.0.0:%v" $v.http.port)
  "log_level" $v.logLevel
  "actuate" $v.actuate
  "dry_run" $v.dryRun
  "kubernetes_in_cluster" true
  "fencing_leases" $v.fencing.leases
  "lease_namespace" .Release.Namespace
  "lease_name_prefix" (include "spillway.leasePrefix" .)
  "lease_duration_seconds" $v.fencing.durationSeconds
  "lease_renew_seconds" $v.fencing.renewSeconds
  "lease_margin_seconds" $v.fencing.marginSeconds
  "actuator_timeout_seconds" $v.actuator.timeoutSeconds
  "actuator_attempts" $v.actuator.attempts
  "actuator_min_interval_seconds" $v.actuator.minIntervalSeconds
  "actuator_failure_threshold" $v.actuator.failureThreshold
  "policy_files" (splitList "," (include "spillway.policyFiles" .))
  "policy_poll_seconds" $v.policies.pollSeconds
  "kafka_bootstrap_servers" $v.kafka.bootstrapServers
  "kafka_group_id" $v.kafka.groupId
  "kafka_requests_topic" $v.kafka.topics.requests
  "kafka_metrics_topic" $v.kafka.topics.metrics
  "kafka_decisions_topic" $v.kafka.topics.decisions
  "kafka_deadletter_topic" $v.kafka.topics.deadletter
  "kafka_state_topic" $v.kafka.topics.state
  "kafka_create_topics" $v.kafka.createTopics
  "kafka_topic_partitions" $v.kafka.topicPartitions
  "kafka_session_timeout_ms" $v.kafka.sessionTimeoutMs
  "kafka_security_protocol" $v.kafka.securityProtocol
}}
{{- if $v.keda.enabled }}
{{- $_ := set $s "keda_listen" (printf "0.0.0.0:%v" $v.keda.port) }}
{{- if $v.keda.tls.existingSecret }}
{{- $_ := set $s "keda_tls_certfile" "/etc/spillway/keda-tls/tls.crt" }}
{{- $_ := set $s "keda_tls_keyfile" "/etc/spillway/keda-tls/tls.key" }}
{{- if $v.keda.tls.clientCaKey }}
{{- $_ := set $s "keda_tls_client_cafile" "/etc/spillway/keda-tls/client-ca.crt" }}
{{- end }}
{{- end }}
{{- end }}
{{- with $v.prometheus.url }}
{{- $_ := set $s "prometheus_url" . }}
{{- end }}
{{- if hasPrefix "SASL" $v.kafka.securityProtocol }}
{{- $_ := set $s "kafka_sasl_mechanism" $v.kafka.sasl.mechanism }}
{{- $_ := set $s "kafka_sasl_username" $v.kafka.sasl.username }}
{{- $_ := set $s "kafka_sasl_password_file" "/etc/spillway/kafka-sasl/password" }}
{{- end }}
{{- if $v.kafka.tls.existingSecret }}
{{- $_ := set $s "kafka_ssl_cafile" "/etc/spillway/kafka-tls/ca.crt" }}
{{- if $v.kafka.tls.certKey }}
{{- $_ := set $s "kafka_ssl_certfile" "/etc/spillway/kafka-tls/tls.crt" }}
{{- $_ := set $s "kafka_ssl_keyfile" "/etc/spillway/kafka-tls/tls.key" }}
{{- end }}
{{- end }}
{{- if $v.alerts.existingSecret }}
{{- $_ := set $s "alerts_token_file" "/etc/spillway/alerts/token" }}
{{- end }}
{{- with $v.aws.endpointUrl }}
{{- $_ := set $s "aws_endpoint_url" . }}
{{- end }}
{{- with $v.aws.region }}
{{- $_ := set $s "aws_region" . }}
{{- end }}
{{- toYaml $s }}
{{- end }}
