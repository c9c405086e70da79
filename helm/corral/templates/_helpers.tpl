{{/* Names and labels, as `helm create` lays them out. */}}
{{- define "corral.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "corral.fullname" -}}
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

{{- define "corral.selectorLabels" -}}
app.kubernetes.io/name: {{ include "corral.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "corral.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "corral.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "corral.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "corral.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "corral.image" -}}
{{- $tag := .Values.image.tag | default (ternary "cuda" "cpu" .Values.gpu.enabled) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* The Secret holding API keys: the chart's own, or an existing one; empty when there are none. */}}
{{- define "corral.authSecret" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else if or .Values.auth.apiKeys .Values.auth.keysFile -}}
{{- printf "%s-auth" (include "corral.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The keys of that Secret holding admin keys and a keys file (empty: not there). */}}
{{- define "corral.apiKeysKey" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecretKeys.apiKeys -}}
{{- else if .Values.auth.apiKeys -}}
api-keys
{{- end -}}
{{- end -}}

{{- define "corral.keysFileKey" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecretKeys.keysFile -}}
{{- else if .Values.auth.keysFile -}}
keys-file
{{- end -}}
{{- end -}}

{{- define "corral.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-models" (include "corral.fullname" .)) -}}
{{- end -}}

{{/* The GPU resource: one MIG slice profile, or whole GPUs. */}}
{{- define "corral.gpuResource" -}}
{{- if .Values.gpu.mig.enabled -}}
{{- printf "nvidia.com/mig-%s" .Values.gpu.mig.profile -}}
{{- else -}}
{{- .Values.gpu.resource -}}
{{- end -}}
{{- end -}}

{{/* Values that only make sense together, checked once (the schema checks each alone). */}}
{{- define "corral.validate" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.corral.drainTimeout) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed corral.drainTimeout (%v), or the kubelet kills running streams" .Values.terminationGracePeriodSeconds .Values.corral.drainTimeout) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled -}}
{{- fail "autoscaling.enabled and keda.enabled both scale the Deployment: choose one (KEDA makes its own HPA)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) -}}
{{- fail "keda.minReplicaCount must not exceed keda.maxReplicaCount" -}}
{{- end -}}
{{- end -}}

{{/* CORRAL_CREATE: name=/etc/corral/modelfiles/model-<i>, one ConfigMap key per Modelfile. */}}
{{- define "corral.createList" -}}
{{- $items := list -}}
{{- range $i, $m := .Values.models.create -}}
{{- $items = append $items (printf "%s=/etc/corral/modelfiles/model-%d" $m.name $i) -}}
{{- end -}}
{{- join "," $items -}}
{{- end -}}

{{/* resources with the GPU limit merged in (an extended resource goes in limits; requests follow). */}}
{{- define "corral.resources" -}}
{{- $res := deepCopy (.Values.resources | default dict) -}}
{{- if .Values.gpu.enabled -}}
{{- $limits := get $res "limits" | default dict -}}
{{- $_ := set $limits (include "corral.gpuResource" .) (int .Values.gpu.count) -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- if $res -}}
{{- toYaml $res -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/* The user's tolerations, plus nvidia.com/gpu:NoSchedule on GPU pods (GPU nodes carry that taint). */}}
{{- define "corral.tolerations" -}}
{{- $list := .Values.tolerations | default list -}}
{{- if and .Values.gpu.enabled .Values.gpu.tolerate -}}
{{- $list = append $list (dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule") -}}
{{- end -}}
{{- if $list -}}
{{- toYaml $list -}}
{{- end -}}
{{- end -}}
