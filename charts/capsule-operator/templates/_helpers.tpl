{{/* Name of the chart, or nameOverride. */}}
{{- define "capsule-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name of every object; the heartbeat Service has exactly this name. */}}
{{- define "capsule-operator.fullname" -}}
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

{{- define "capsule-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "capsule-operator.labels" -}}
helm.sh/chart: {{ include "capsule-operator.chart" . }}
{{ include "capsule-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: capsule
{{- end }}

{{- define "capsule-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "capsule-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "capsule-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "capsule-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "capsule-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "capsule-operator.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecarImage.repository (.Values.sidecarImage.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Where workers send heartbeats: the leader-only Service of this release unless overridden. */}}
{{- define "capsule-operator.heartbeatUrl" -}}
{{- if .Values.operator.heartbeatUrl }}
{{- .Values.operator.heartbeatUrl }}
{{- else }}
{{- printf "http://%s.%s.svc:%d/v1/heartbeats" (include "capsule-operator.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
{{- end }}

{{- define "capsule-operator.gatewayName" -}}
{{- printf "%s-gateway" (include "capsule-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "capsule-operator.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "capsule-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "capsule-operator.gatewayLabels" -}}
helm.sh/chart: {{ include "capsule-operator.chart" . }}
{{ include "capsule-operator.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.gateway.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: capsule
{{- end }}

{{- define "capsule-operator.gatewayServiceAccountName" -}}
{{- default (include "capsule-operator.gatewayName" .) .Values.gateway.serviceAccount.name }}
{{- end }}

{{/* Where clients reach the gateway: gateway.externalUrl, else its in-cluster Service. */}}
{{- define "capsule-operator.gatewayUrl" -}}
{{- if .Values.gateway.externalUrl }}
{{- .Values.gateway.externalUrl }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "capsule-operator.gatewayName" .) .Release.Namespace (int .Values.gateway.service.port) }}
{{- end }}
{{- end }}
