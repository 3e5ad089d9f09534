{{/*
Names, labels and the RBAC rule sets shared by the templates.
*/}}

{{- define "cadenza.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every namespaced resource: "<release>-cadenza", or the release name alone when it
already holds the chart name. 63 characters at most (Service names are DNS labels).
*/}}
{{- define "cadenza.fullname" -}}
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

{{/*
Name of cluster-scoped resources (ClusterRole, bindings, webhook configuration): prefixed with the
release namespace so that same-named releases in two namespaces do not collide.
*/}}
{{- define "cadenza.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "cadenza.fullname" .) }}
{{- end }}

{{- define "cadenza.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cadenza.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cadenza.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "cadenza.labels" -}}
helm.sh/chart: {{ include "cadenza.chart" . }}
{{ include "cadenza.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cadenza
{{- end }}

{{- define "cadenza.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cadenza.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cadenza.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "cadenza.databaseSecretName" -}}
{{- default (printf "%s-database" (include "cadenza.fullname" .)) .Values.database.existingSecret.name }}
{{- end }}

{{- define "cadenza.webhookSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "cadenza.fullname" .)) .Values.webhook.tls.secretName }}
{{- end }}

{{/* The DNS name the API server calls the webhook at; the serving certificate must cover it. */}}
{{- define "cadenza.serviceHost" -}}
{{- printf "%s.%s.svc" (include "cadenza.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
Rules the operator needs in every namespace it watches (DESIGN §4, §8): read the resources and
pods into kopf's indexes, write the status subresources, post Events, make and read each
Executor's own dispatch-token Secret, and create/update/patch/delete Tasks for the REST API (each
only after SubjectAccessReview allowed the caller the same verb on the same Task). No other
delete, no wildcard, no write to pods or to the Executors' specs.
*/}}
{{- define "cadenza.namespacedRules" -}}
- apiGroups: [cadenza.dev]
  resources: [tasks]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [cadenza.dev]
  resources: [executors]
  # create, update, delete: the REST API's registration of executors outside the cluster
  verbs: [get, list, watch, create, update, delete]
- apiGroups: [cadenza.dev]
  resources: [tasks/status, executors/status]
  verbs: [get, patch, update]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [secrets]
  # get, create: each Executor's own dispatch-token Secret, made by the operator (owned by the
  # Executor, so the garbage collector deletes it) and read; patch: a rotation asked for with
  # the Executor's cadenza.dev/rotate-token annotation. Nothing lists, updates or deletes them.
  verbs: [get, create, patch]
{{- end }}

{{/*
Cluster-scoped rules, needed in both modes: kopf watches CRDs to notice its resources appear; the
REST API authenticates with TokenReview and authorises with SubjectAccessReview. In namespaced
mode kopf also lists and watches Namespaces to notice watched ones come and go (in cluster-wide
mode it does not look at them).
*/}}
{{- define "cadenza.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
- apiGroups: [authorization.k8s.io]
  resources: [subjectaccessreviews]
  verbs: [create]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}
