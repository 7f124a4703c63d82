{{/*
Shared names and labels. Kubernetes names and label values are limited to 63
characters, so every name is cut there (and a trailing dash removed).
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "payi-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, else <release>-<name>, else
just <release> when the release name already contains the name.
*/}}
{{- define "payi-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "payi-operator.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* <chart>-<version> for the helm.sh/chart label ('+' is not allowed in label values). */}}
{{- define "payi-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator pods; never change them on upgrade. */}}
{{- define "payi-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payi-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The labels of every object of the release. */}}
{{- define "payi-operator.labels" -}}
{{ include "payi-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "payi-operator.chart" . }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "payi-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "payi-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "payi-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The verifier's objects: <fullname>-verifier. */}}
{{- define "payi-operator.verifier.fullname" -}}
{{- printf "%s-verifier" (include "payi-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels that select the verifier pods. Their app.kubernetes.io/name differs from
the operator's, so the operator's Deployment, Service and PodDisruptionBudget never
select a verifier pod.
*/}}
{{- define "payi-operator.verifier.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-verifier" (include "payi-operator.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: verifier
{{- end }}

{{- define "payi-operator.verifier.labels" -}}
{{ include "payi-operator.verifier.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "payi-operator.chart" . }}
{{- end }}

{{/* The ServiceAccount the verifier runs as. */}}
{{- define "payi-operator.verifier.serviceAccountName" -}}
{{- if .Values.verifier.serviceAccount.create }}
{{- default (include "payi-operator.verifier.fullname" .) .Values.verifier.serviceAccount.name }}
{{- else }}
{{- required "verifier.serviceAccount.name is required when verifier.serviceAccount.create is false" .Values.verifier.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The metering gateway's objects: <fullname>-gateway. */}}
{{- define "payi-operator.gateway.fullname" -}}
{{- printf "%s-gateway" (include "payi-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the gateway pods (a name of their own, like the verifier's). */}}
{{- define "payi-operator.gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-gateway" (include "payi-operator.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "payi-operator.gateway.labels" -}}
{{ include "payi-operator.gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "payi-operator.chart" . }}
{{- end }}

{{/* The ServiceAccount the gateway runs as. */}}
{{- define "payi-operator.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "payi-operator.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Where the ledger's CA (gateway.limits.redisCASecret) is mounted, in the gateway and the operator.
*/}}
{{- define "payi-operator.ledgerCAFile" -}}
/etc/payi-ledger-ca/{{ .Values.gateway.limits.redisCASecret.key }}
{{- end }}
