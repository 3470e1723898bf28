{{/* Chart name, truncated to 63 characters (DNS label limit). */}}
{{- define "voiceops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release + chart name unless the release already contains it.
Truncated to 50 so suffixed names (-metrics, -dashboard, -test-health) stay
within the 63-character DNS label limit.
*/}}
{{- define "voiceops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "voiceops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "voiceops.labels" -}}
helm.sh/chart: {{ include "voiceops.chart" . }}
{{ include "voiceops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: voiceops
{{- end }}

{{/* Labels that select the operator pods. */}}
{{- define "voiceops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voiceops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "voiceops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voiceops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "voiceops.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* True ("true") when more than one replica runs: kopf peering is on. */}}
{{- define "voiceops.ha" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{/*
Restricted Pod Security Standard, shared by the operator pod and the test pod.
UID 10001 is the non-root user the images create (see the Dockerfile).
*/}}
{{- define "voiceops.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "voiceops.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
checkov skips for the operator workload, each with its reason (checkov reads
`checkov.io/skipN: CHECK=reason` annotations).
*/}}
{{- define "voiceops.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_38=The operator watches and patches Kubernetes objects, so it needs its service account token.
checkov.io/skip2: CKV_K8S_11=No CPU limit on purpose - CFS throttling would delay failover decisions; a CPU request is set.
checkov.io/skip3: CKV_K8S_15=IfNotPresent is the default so kind/air-gapped clusters work; set image.digest to make the tag immutable.
{{- if not .Values.image.digest }}
checkov.io/skip4: CKV_K8S_43=Users build the image themselves, so the chart cannot know its digest; set image.digest to pin it.
{{- end }}
{{- end }}

{{/* Labels that select the chart's Redis pod (long-text jobs). */}}
{{- define "voiceops.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "voiceops.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
