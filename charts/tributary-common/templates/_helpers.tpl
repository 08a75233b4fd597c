{{/* Labels every object of a release carries. */}}
{{- define "tributary.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Labels that select a component's pods: a dict with "ctx" (the root) and "component". */}}
{{- define "tributary.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* A release-scoped name: "NAME-SUFFIX" from a dict with "ctx" and "suffix". */}}
{{- define "tributary.name" -}}
{{- if .suffix -}}
{{- printf "%s-%s" .ctx.Release.Name .suffix | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .ctx.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* The Tributary image. */}}
{{- define "tributary.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end }}

{{/* Pod security: non-root, no privilege escalation, read-only root filesystem. */}}
{{- define "tributary.podSecurityContext" -}}
{{- if .Values.securityContext }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end }}
{{- end }}

{{- define "tributary.containerSecurityContext" -}}
{{- if .Values.securityContext }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end }}
{{- end }}

{{/* Prometheus scrape annotations for a metrics port. */}}
{{- define "tributary.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.scrape }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Scheduling and image pull settings shared by every pod. */}}
{{- define "tributary.podPlacement" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* An env entry per setting: a dict of env name to value, rendered sorted. */}}
{{- define "tributary.env" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
