{{/* Names and labels. */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Service/Deployment name: <release>-cache unless overridden ("tollgate" -> "tollgate-cache"). */}}
{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-cache" (.Release.Name | trimSuffix "-cache") | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- end }}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: cache-service
{{- end }}

{{/* Redis in use? */}}
{{- define "tollgate.redis" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* The admin token Secret's name ("" when the admin API stays disabled). */}}
{{- define "tollgate.adminSecret" -}}
{{- if .Values.adminToken.existingSecret }}{{ .Values.adminToken.existingSecret }}
{{- else if .Values.adminToken.value }}{{ include "tollgate.fullname" . }}-admin
{{- end }}
{{- end }}

{{/* Istio's Envoy cluster for this release's Service: what the filter's cache.cluster names. */}}
{{- define "tollgate.istioCluster" -}}
{{- printf "outbound|%d||%s" (int .Values.service.port) (include "tollgate.host" .) }}
{{- end }}

{{- define "tollgate.host" -}}
{{- printf "%s.%s.svc.%s" (include "tollgate.fullname" .) .Release.Namespace .Values.wasmPlugin.clusterDomain }}
{{- end }}

{{/* Refuse what cannot work. */}}
{{- define "tollgate.validate" -}}
{{- if not (include "tollgate.redis" .) }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount > 1 needs redis.url or redis.existingSecret: the embedded store belongs to one pod" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled needs redis.url or redis.existingSecret: the embedded store belongs to one pod" }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
