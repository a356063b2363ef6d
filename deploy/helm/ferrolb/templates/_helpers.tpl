{{/* Chart name, at most 63 characters. */}}
{{- define "ferrolb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of every object: the release name when it already contains the
chart name (release "ferrolb" gives ferrolb-controller, ferrolb-speaker,
ferrolb-memberlist), else release-chart.
*/}}
{{- define "ferrolb.fullname" -}}
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

{{- define "ferrolb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "ferrolb.labels" -}}
helm.sh/chart: {{ include "ferrolb.chart" . }}
{{ include "ferrolb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ferrolb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrolb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferrolb.controller.name" -}}
{{- printf "%s-controller" (include "ferrolb.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ferrolb.speaker.name" -}}
{{- printf "%s-speaker" (include "ferrolb.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The membership Secret (key `secretkey`). */}}
{{- define "ferrolb.memberlistSecret" -}}
{{- printf "%s-memberlist" (include "ferrolb.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of the legacy ConfigMap both components read. */}}
{{- define "ferrolb.configMapName" -}}
{{- default "config" .Values.existingConfigMap }}
{{- end }}

{{- define "ferrolb.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "ferrolb.controller.name" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferrolb.speaker.serviceAccountName" -}}
{{- if .Values.speaker.serviceAccount.create }}
{{- default (include "ferrolb.speaker.name" .) .Values.speaker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.speaker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* RUST_LOG from a MetalLB-style log level. */}}
{{- define "ferrolb.rustLog" -}}
{{- $level := . | default "info" | lower }}
{{- $map := dict "all" "trace" "none" "off" "warning" "warn" }}
{{- $level = get $map $level | default $level }}
{{- if not (has $level (list "trace" "debug" "info" "warn" "error" "off")) }}
{{- fail (printf "logLevel %q: use one of trace, debug, info, warn, error (or MetalLB's all, none)" .) }}
{{- end }}
{{- if has $level (list "trace" "debug") }}
{{- $level }}
{{- else }}
{{- printf "%s,kube=warn" $level }}
{{- end }}
{{- end }}

{{/* Image reference; the tag defaults to the chart's appVersion. */}}
{{- define "ferrolb.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag | toString) }}
{{- end }}

{{/* An httpGet probe from a MetalLB-style probe value. */}}
{{- define "ferrolb.probe" -}}
httpGet:
  path: {{ .path }}
  port: monitoring
failureThreshold: {{ .probe.failureThreshold }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
successThreshold: {{ .probe.successThreshold }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
{{- end }}

{{/* Values that cannot work, refused before anything is installed. */}}
{{- define "ferrolb.validate" -}}
{{- if and .Values.speaker.frr .Values.speaker.frr.enabled }}
{{- fail "speaker.frr.enabled: ferrolb has no FRR/BGP speaker (layer 2 only); set it to false" }}
{{- end }}
{{- if not .Values.speaker.memberlist.enabled }}
{{- fail "speaker.memberlist.enabled: ferrolb's speakers always run their membership protocol; set it to true" }}
{{- end }}
{{- if and (not (empty .Values.configInline)) .Values.existingConfigMap }}
{{- fail "configInline and existingConfigMap are mutually exclusive" }}
{{- end }}
{{- if not (has .Values.controller.logFormat (list "json" "text")) }}
{{- fail "controller.logFormat: use json or text" }}
{{- end }}
{{- if not (has .Values.speaker.logFormat (list "json" "text")) }}
{{- fail "speaker.logFormat: use json or text" }}
{{- end }}
{{- end }}

{{/* Whether the values ask for metallb.io objects. */}}
{{- define "ferrolb.wantsCrdObjects" -}}
{{- if or .Values.ipAddressPools .Values.l2Advertisements }}true{{- end }}
{{- end }}

{{/*
Non-empty when the metallb.io objects can be part of this release: the API
server serves the kinds (helm install/upgrade), or `helm template` was told
so with --api-versions metallb.io/v1beta1.
*/}}
{{- define "ferrolb.crdObjectsServed" -}}
{{- if and (include "ferrolb.wantsCrdObjects" .) (.Capabilities.APIVersions.Has "metallb.io/v1beta1") }}true{{- end }}
{{- end }}
