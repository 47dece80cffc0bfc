{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "hyperthumbnail.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name used for every object. */}}
{{- define "hyperthumbnail.fullname" -}}
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

{{- define "hyperthumbnail.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hyperthumbnail.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hyperthumbnail.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "hyperthumbnail.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: inference-server
{{- end }}

{{- define "hyperthumbnail.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hyperthumbnail.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: the GPU image when gpu.enabled, else the CPU image; a digest wins over a tag. */}}
{{- define "hyperthumbnail.image" -}}
{{- $img := ternary .Values.gpu.image .Values.image .Values.gpu.enabled }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* Where tritonserver reads the repository: an object-storage URI, the PVC mount, or a path in the image. */}}
{{- define "hyperthumbnail.modelRepository" -}}
{{- $repo := .Values.modelRepository }}
{{- $set := 0 }}
{{- range (list $repo.uri $repo.pvc.claimName $repo.path) }}{{ if . }}{{ $set = add1 $set }}{{ end }}{{ end }}
{{- if ne (int $set) 1 }}
{{- fail "modelRepository: set exactly one of uri (s3://bucket/path, s3://https://HOST:PORT/bucket/path, gs://..., as://...), pvc.claimName, or path" }}
{{- else if $repo.uri }}
{{- $repo.uri }}
{{- else if $repo.pvc.claimName }}
{{- printf "/models/%s" ($repo.pvc.subPath | default "") | trimSuffix "/" }}
{{- else }}
{{- $repo.path }}
{{- end }}
{{- end }}

{{/* The Secret holding the admin key of the restricted APIs. */}}
{{- define "hyperthumbnail.adminSecret" -}}
{{- default (printf "%s-admin" (include "hyperthumbnail.fullname" .)) .Values.adminApi.existingSecret }}
{{- end }}

{{/* Prometheus label matchers that select this release's Triton series. */}}
{{- define "hyperthumbnail.seriesSelector" -}}
{{- default (printf "namespace=%q, job=%q" .Release.Namespace (include "hyperthumbnail.fullname" .)) .Values.monitoring.seriesSelector }}
{{- end }}

{{/* Average queue time per top-level request, per pod: the recording rule's name. */}}
{{- define "hyperthumbnail.queueMetric" -}}
hyperthumbnail:queue_seconds_per_request:rate1m
{{- end }}
