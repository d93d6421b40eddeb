{{- define "recops.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "recops.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "recops.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "recops.serviceAccountName" -}}
{{- default (include "recops.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "recops.webhookService" -}}{{ include "recops.fullname" . }}-webhook{{- end -}}
{{- define "recops.webhookSecret" -}}{{ include "recops.fullname" . }}-webhook-tls{{- end -}}

{{/* A map as "k=v,k=v" (sorted), the format of RECOPS_BUCKET_REGIONS / RECOPS_REGISTRY_REGIONS. */}}
{{- define "recops.pairs" -}}
{{- $out := list -}}
{{- range $k, $v := . }}{{ $out = append $out (printf "%s=%s" $k $v) }}{{ end -}}
{{- join "," $out -}}
{{- end }}


{{/* The ossVolumes buckets also mounted into the operator (space-separated; empty when none). */}}
{{- define "recops.operatorBuckets" -}}
{{- $out := list -}}
{{- range .Values.ossVolumes.buckets }}{{ if ne (.operator | toString) "false" }}{{ $out = append $out .name }}{{ end }}{{ end -}}
{{- join " " $out -}}
{{- end -}}
