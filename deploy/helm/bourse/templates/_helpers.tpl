{{/* vim: set filetype=mustache: */}}

{{- define "bourse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bourse.fullname" -}}
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

{{- define "bourse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the release. */}}
{{- define "bourse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bourse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Common labels. */}}
{{- define "bourse.labels" -}}
helm.sh/chart: {{ include "bourse.chart" . }}
{{ include "bourse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bourse
{{- end -}}

{{/* Labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "bourse.componentLabels" -}}
{{ include "bourse.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bourse.componentSelectorLabels" -}}
{{ include "bourse.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Resource name of one component: (dict "root" $ "component" "api"). */}}
{{- define "bourse.componentName" -}}
{{- printf "%s-%s" (include "bourse.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bourse.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "bourse.secretName" -}}
{{- default (printf "%s-secrets" (include "bourse.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "bourse.configName" -}}
{{- printf "%s-config" (include "bourse.fullname" .) -}}
{{- end -}}

{{- define "bourse.amqpEnabled" -}}
{{- if or .Values.rabbitmq.enabled .Values.external.amqpUrl -}}true{{- end -}}
{{- end -}}

{{- define "bourse.redisEnabled" -}}
{{- if or .Values.redis.enabled .Values.external.redisUrl -}}true{{- end -}}
{{- end -}}

{{- define "bourse.exchangeUrl" -}}
{{- if .Values.exchange.enabled -}}
{{- printf "http://%s:%v" (include "bourse.componentName" (dict "root" . "component" "exchange")) .Values.exchange.port -}}
{{- else -}}
{{- .Values.external.exchangeUrl -}}
{{- end -}}
{{- end -}}

{{/* Secret value: the given one, else the one already in the cluster, else a random one. */}}
{{- define "bourse.secretValue" -}}
{{- if .value -}}
{{- .value | toString | b64enc -}}
{{- else if hasKey .existing .key -}}
{{- index .existing .key -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}

{{- define "bourse.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "bourse.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/*
Environment of a bourse container: (dict "root" $ "port" 8000 "needs" (list "db" "mqtt" ...)).
needs: db, mqtt, amqp, redis, exchange, quotes (provider key + quote service URL), jwt.
*/}}
{{- define "bourse.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $full := include "bourse.fullname" $root -}}
- name: BOURSE_HTTP_ADDR
  value: "0.0.0.0:{{ .port }}"
{{- if has "jwt" .needs }}
{{ include "bourse.secretEnv" (dict "root" $root "name" "BOURSE_JWT_SECRET" "key" "jwt-secret") }}
{{- end }}
{{- if has "db" .needs }}
{{- if $v.postgresql.enabled }}
{{ include "bourse.secretEnv" (dict "root" $root "name" "DB_PASSWORD" "key" "postgres-password") }}
- name: BOURSE_DATABASE_URL
  value: "postgres://{{ $v.postgresql.username }}:$(DB_PASSWORD)@{{ $full }}-postgresql:5432/{{ $v.postgresql.database }}"
{{- else }}
{{ include "bourse.secretEnv" (dict "root" $root "name" "BOURSE_DATABASE_URL" "key" "database-url") }}
{{- end }}
{{- end }}
{{- if has "mqtt" .needs }}
{{- if $v.mosquitto.enabled }}
- name: BOURSE_MQTT_URL
  value: "mqtt://{{ $full }}-mosquitto:1883"
{{- else }}
{{ include "bourse.secretEnv" (dict "root" $root "name" "BOURSE_MQTT_URL" "key" "mqtt-url") }}
{{- end }}
{{- end }}
{{- if has "amqp" .needs }}
{{- if $v.rabbitmq.enabled }}
{{ include "bourse.secretEnv" (dict "root" $root "name" "AMQP_PASSWORD" "key" "rabbitmq-password") }}
- name: BOURSE_AMQP_URL
  value: "amqp://{{ $v.rabbitmq.username }}:$(AMQP_PASSWORD)@{{ $full }}-rabbitmq:5672"
{{- else if $v.external.amqpUrl }}
{{ include "bourse.secretEnv" (dict "root" $root "name" "BOURSE_AMQP_URL" "key" "amqp-url") }}
{{- end }}
{{- end }}
{{- if has "redis" .needs }}
{{- if $v.redis.enabled }}
- name: BOURSE_REDIS_URL
  value: "redis://{{ $full }}-redis:6379"
{{- else if $v.external.redisUrl }}
{{ include "bourse.secretEnv" (dict "root" $root "name" "BOURSE_REDIS_URL" "key" "redis-url") }}
{{- end }}
{{- end }}
{{- if and (has "exchange" .needs) (include "bourse.exchangeUrl" $root) }}
- name: BOURSE_EXCHANGE_URL
  value: {{ include "bourse.exchangeUrl" $root | quote }}
{{- end }}
{{- if has "quotes" .needs }}
{{ include "bourse.secretEnv" (dict "root" $root "name" "BOURSE_ALPHAVANTAGE_KEY" "key" "alphavantage-key" "optional" true) }}
{{- if and $v.quoteService.enabled (not (include "bourse.amqpEnabled" $root)) }}
- name: BOURSE_QUOTE_SERVICE_URL
  value: "http://{{ $full }}-quote-service:{{ $v.quoteService.port }}"
{{- end }}
{{- end }}
{{- range $k, $val := .extraEnv }}
- name: {{ $k }}
  value: {{ $val | toString | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level scheduling and security shared by bourse pods. */}}
{{- define "bourse.podSpecCommon" -}}
serviceAccountName: {{ include "bourse.fullname" .root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod annotations of a bourse role: (dict "root" $ "port" 8000). */}}
{{- define "bourse.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- if .root.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
A bourse role: Deployment + ClusterIP Service (the API's Service lives in api.yaml).
(dict "root" $ "component" "relay" "role" "relay" "v" .Values.relay "needs" (list ...)
      "args" (list ...) "replicas" 1 "service" true "strategy" "RollingUpdate")
*/}}
{{- define "bourse.role" -}}
{{- $root := .root -}}
{{- $v := .v -}}
{{- $name := include "bourse.componentName" (dict "root" $root "component" .component) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "bourse.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  {{- if not (dig "autoscaling" "enabled" false $v) }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if eq (default "RollingUpdate" .strategy) "Recreate" }}
  strategy:
    type: Recreate
  {{- else }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  {{- end }}
  selector:
    matchLabels:
      {{- include "bourse.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "bourse.componentLabels" (dict "root" $root "component" .component) | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "bourse.podAnnotations" (dict "root" $root "port" $v.port) | nindent 8 }}
    spec:
      {{- include "bourse.podSpecCommon" (dict "root" $root "affinity" $v.affinity) | nindent 6 }}
      {{- if .spread }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "bourse.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 14 }}
      {{- end }}
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .component }}
          image: {{ include "bourse.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml (concat (list .role) (default (list) .args)) | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "bourse.configName" $root }}
          env:
            {{- include "bourse.env" (dict "root" $root "port" $v.port "needs" .needs "extraEnv" (merge (dict) (default (dict) $v.extraEnv) (default (dict) .env))) | nindent 12 }}
          startupProbe:
            httpGet:
              path: /_healthcheck
              port: http
            periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.startup.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
          livenessProbe:
            httpGet:
              path: /_healthcheck
              port: http
            initialDelaySeconds: {{ $root.Values.probes.liveness.initialDelaySeconds }}
            periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.liveness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
            timeoutSeconds: {{ $root.Values.probes.readiness.timeoutSeconds }}
            failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: work
              mountPath: /var/lib/bourse
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        - name: work
          emptyDir:
            sizeLimit: 256Mi
{{- if .service }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "bourse.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "bourse.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 4 }}
  ports:
    - name: http
      port: {{ $v.port }}
      targetPort: http
      protocol: TCP
{{- end }}
{{- end -}}

{{/* Container securityContext of an engine: (dict "uid" 999). */}}
{{- define "bourse.engineSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .gid | default .uid }}
capabilities:
  drop:
    - ALL
{{- end -}}

{{- define "bourse.enginePodSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .gid | default .uid }}
fsGroup: {{ .gid | default .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Annotation of an engine's workload: checkov's CKV_K8S_40 (uid >= 10000) does not apply to an
upstream image that runs as its own user, which owns the image's files: (dict "uid" 999). */}}
{{- define "bourse.engineCheckovSkip" -}}
checkov.io/skip1: CKV_K8S_40=the upstream image runs as its own user (uid {{ .uid }}), which owns its files
{{- end -}}
