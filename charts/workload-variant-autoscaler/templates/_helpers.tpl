{{/* Chart name, overridable. */}}
{{- define "wva.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name: the release name when it already contains the chart name,
else "<release>-<chart>". Truncated to 63 characters (DNS label limit).
*/}}
{{- define "wva.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wva.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wva.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wva.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "wva.labels" -}}
helm.sh/chart: {{ include "wva.chart" . }}
{{ include "wva.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: workload-variant-autoscaler
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "wva.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-controller" (include "wva.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wva.configMapName" -}}
{{- printf "%s-variantautoscaling-config" (include "wva.fullname" .) | trunc 253 -}}
{{- end -}}

{{- define "wva.saturationConfigMapName" -}}
{{- printf "%s-saturation-scaling-config" (include "wva.fullname" .) | trunc 253 -}}
{{- end -}}

{{- define "wva.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The namespaces watched in namespace-scoped mode, one per line; empty in cluster-wide mode.
namespaceScoped without a watchNamespaces list watches the release namespace only.
*/}}
{{- define "wva.watchNamespaces" -}}
{{- if .Values.namespaceScoped -}}
{{- $list := .Values.watchNamespaces | default (list .Release.Namespace) -}}
{{- range $list | uniq }}
{{ . }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wva.actuationMode" -}}
{{- $mode := .Values.actuation.mode | default "hpa" -}}
{{- if not (has $mode (list "hpa" "direct")) -}}
{{- fail (printf "actuation.mode must be hpa or direct, got %q" $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end -}}

{{/* Label matchers selecting the target variant's wva_desired_replicas series, as a map. */}}
{{- define "wva.targetMetricSelector" -}}
variant_name: {{ required "scaleTarget.variantName is required for hpa/keda" .Values.scaleTarget.variantName | quote }}
exported_namespace: {{ .Values.scaleTarget.namespace | default .Release.Namespace | quote }}
{{- with .Values.controllerInstance }}
controller_instance: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The same selector as a PromQL label matcher list (values are plain DNS-ish names). */}}
{{- define "wva.targetPromQLSelector" -}}
{{- $sel := include "wva.targetMetricSelector" . | fromYaml -}}
{{- $parts := list -}}
{{- range $k := keys $sel | sortAlpha -}}
{{- $v := get $sel $k | replace "\\" "\\\\" | replace "\"" "\\\"" -}}
{{- $parts = append $parts (printf "%s=\"%s\"" $k $v) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}

{{/* The name of the metrics port (container and Service): https-metrics, or http-metrics when not secure. */}}
{{- define "wva.metricsPortName" -}}
{{- if .Values.metrics.secure -}}https-metrics{{- else -}}http-metrics{{- end -}}
{{- end -}}

{{/* sharding.shards as a number, validated (1 to 1024, as wva run's --shards). */}}
{{- define "wva.shards" -}}
{{- $shards := int .Values.sharding.shards -}}
{{- if or (lt $shards 1) (gt $shards 1024) -}}
{{- fail (printf "sharding.shards must be from 1 to 1024, got %v" .Values.sharding.shards) -}}
{{- end -}}
{{- $shards -}}
{{- end -}}

{{/* The label that tells one shard's operator pods from another's (sharding.shards > 1); the context is the index. */}}
{{- define "wva.shardLabel" -}}
wva.llmd.ai/shard: {{ . | quote }}
{{- end -}}
