{{/*
Names, labels and the pieces every aegis pod shares (image, env for NATS,
security contexts), so the monitor, the services and the init Job cannot
drift apart.
*/}}

{{- define "aegis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix, at most 40 characters so suffixes stay < 63. */}}
{{- define "aegis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aegis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aegis
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "nats"). */}}
{{- define "aegis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aegis.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The labels of a pod template: the selector labels and part-of, all stable
across chart versions. Never helm.sh/chart or app.kubernetes.io/version
there: a changed pod template restarts every pod of the workload, so a
chart version bump alone would roll every NATS node. Call like
aegis.selectorLabels.
*/}}
{{- define "aegis.podLabels" -}}
{{ include "aegis.selectorLabels" . }}
app.kubernetes.io/part-of: aegis
{{- end }}

{{- define "aegis.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "aegis.natsImage" -}}
{{- printf "%s:%s" .Values.nats.image.repository .Values.nats.image.tag }}
{{- end }}

{{- define "aegis.natsCredentialsSecret" -}}
{{- default (printf "%s-nats-credentials" (include "aegis.fullname" .)) .Values.nats.auth.existingSecret }}
{{- end }}

{{- define "aegis.monitorSecret" -}}
{{- default (printf "%s-monitor" (include "aegis.fullname" .)) .Values.monitor.auth.existingSecret }}
{{- end }}

{{/* Whether the monitor gets the system account's credentials. */}}
{{- define "aegis.withSystemAccount" -}}
{{- if or (not .Values.nats.external.url) .Values.nats.external.systemAccount }}true{{ end }}
{{- end }}

{{/* Client URLs of NATS: the external ones, or every node of the StatefulSet. */}}
{{- define "aegis.natsUrl" -}}
{{- if .Values.nats.external.url }}
{{- .Values.nats.external.url }}
{{- else }}
{{- $fullname := include "aegis.fullname" . }}
{{- $scheme := ternary "tls" "nats" .Values.nats.tls.enabled }}
{{- $urls := list }}
{{- range $i := until (int .Values.nats.replicas) }}
{{- $urls = append $urls (printf "%s://%s-nats-%d.%s-nats-headless.%s.svc:4222" $scheme $fullname $i $fullname $.Release.Namespace) }}
{{- end }}
{{- join "," $urls }}
{{- end }}
{{- end }}

{{/*
The NATS users, their permissions and the accounts block, generated from the
role table by `aegis nats-config --format helm-values` (never edit by hand).
Use as `include "aegis.natsUsers" . | fromYaml`.
*/}}
{{- define "aegis.natsUsers" -}}
{{- .Files.Get "files/nats-users.yaml" }}
{{- end }}

{{/*
The credentials Secret's keys, space-separated: every user's and the system
user's, and with the chart's own NATS the routes' (aegis.routeSecretKey).
*/}}
{{- define "aegis.natsSecretKeys" -}}
{{- $users := include "aegis.natsUsers" . | fromYaml }}
{{- $keys := list }}
{{- range $u := append $users.users $users.systemUser }}
{{- $keys = append $keys $u.secretKey }}
{{- end }}
{{- if not .Values.nats.external.url }}
{{- $keys = append $keys (include "aegis.routeSecretKey" .) }}
{{- end }}
{{- join " " $keys }}
{{- end }}

{{/*
The route connections between the NATS nodes authenticate as the user
`route` with this key's password: the cluster block's `authorization`, and
the user and password in every route URL (ROUTE_URL_<n>, composed by the
kubelet from SECRET_ROUTE_PASSWORD, as nats-server substitutes only whole values).
*/}}
{{- define "aegis.routeSecretKey" -}}route-password{{- end }}

{{/*
The NATS connection of an aegis process running as `role` (order, pricing,
risk, monitor, operator): the user files/nats-users.yaml gives that
component, its password from the credentials Secret and its own reply-inbox
prefix (the only inboxes the user may read). Call with (dict "ctx" $ "role" "order").
*/}}
{{- define "aegis.natsEnv" -}}
{{- $user := dict }}
{{- range $u := (include "aegis.natsUsers" .ctx | fromYaml).users }}
{{- if eq $u.component $.role }}{{ $user = $u }}{{ end }}
{{- end }}
{{- if not $user.user }}
{{- fail (printf "files/nats-users.yaml has no user for %s; regenerate it with `aegis nats-config --format helm-values`" .role) }}
{{- end }}
- name: AEGIS_NATS_URL
  value: {{ include "aegis.natsUrl" .ctx | quote }}
- name: AEGIS_NATS_REPLICAS
  value: {{ .ctx.Values.aegis.replicas | quote }}
- name: AEGIS_NATS_USER
  value: {{ $user.user | quote }}
- name: AEGIS_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "aegis.natsCredentialsSecret" .ctx }}
      key: {{ $user.secretKey }}
- name: AEGIS_NATS_INBOX_PREFIX
  value: {{ $user.inboxPrefix | quote }}
{{- if .ctx.Values.nats.tls.enabled }}
- name: AEGIS_NATS_TLS_CA
  value: /etc/aegis/nats-tls/ca.crt
{{- end }}
- name: AEGIS_LOG
  value: {{ .ctx.Values.aegis.logLevel | quote }}
{{- end }}

{{- define "aegis.tlsVolumeMount" -}}
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  mountPath: /etc/aegis/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "aegis.tlsVolume" -}}
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ .Values.nats.tls.secretName }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{- define "aegis.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "aegis.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{- define "aegis.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A random secret value, or the one already stored in the release's Secret.
`lookup` answers only with cluster access (helm install/upgrade); under
`helm template`, a client-side --dry-run or Argo CD it returns nothing and
every render makes a new value: those must use existingSecret
(docs/deployment.md, "Secrets"). No checksum of the Secret goes on the pod
templates: stable where lookup works, it would restart every pod on every
render where it does not.
*/}}
{{- define "aegis.keepOrGenerate" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if and $existing (index ($existing.data | default dict) .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum 32 | b64enc }}
{{- end }}
{{- end }}

{{/* NetworkPolicy egress rules: DNS, and NATS (the chart's nodes or the external ports). */}}
{{- define "aegis.egressDns" -}}
- ports:
    - { protocol: UDP, port: 53 }
    - { protocol: TCP, port: 53 }
{{- end }}
{{- define "aegis.egressNats" -}}
{{- if .Values.nats.external.url }}
- ports:
    {{- range .Values.nats.external.ports }}
    - { protocol: TCP, port: {{ . }} }
    {{- end }}
{{- else }}
- to:
    - podSelector:
        matchLabels:
          {{- include "aegis.selectorLabels" (dict "ctx" $ "component" "nats") | nindent 10 }}
  ports:
    - { protocol: TCP, port: 4222 }
{{- end }}
{{- end }}
