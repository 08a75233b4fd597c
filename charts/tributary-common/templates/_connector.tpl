{{/*
A connector's objects: ServiceAccount, Deployment (`tributary-KIND-connector`) and a metrics
Service. Takes a dict:
  ctx        the chart's root context
  kind       cron | nats | kafka | sqs
  env        dict of env name to value: the connector's own settings
  extraEnv   (optional) YAML list of env entries (valueFrom secrets)
  volumes    (optional) YAML list of extra volumes
  mounts     (optional) YAML list of extra volume mounts
  replicas   (optional) replicas instead of .Values.replicas
*/}}
{{- define "tributary.connector" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $name := include "tributary.name" (dict "ctx" $ctx "suffix" "") -}}
{{- $selector := dict "ctx" $ctx "component" "connector" -}}
{{- $common := dict
  "gateway_url" $v.gatewayURL
  "upstream_timeout" $v.upstreamTimeout
  "rebuild_interval" $v.rebuildInterval
  "topic_delimiter" $v.topicDelimiter
  "asynchronous_invocation" $v.asyncInvocation
  "content_type" $v.contentType
  "print_response" $v.printResponse
  "print_response_body" $v.printResponseBody
  "print_request_body" $v.printRequestBody
  "cloudevents" $v.cloudevents
  "basic_auth" $v.basicAuth
  "secret_mount_path" "/var/secrets/gateway"
  "max_inflight" $v.maxInflight
  "worker_threads" $v.workerThreads
  "max_retries" $v.maxRetries
  "initial_retry_wait" $v.initialRetryWait
  "max_retry_wait" $v.maxRetryWait
  "metrics_port" $v.metrics.port
  "log_format" $v.logFormat
  "OTEL_EXPORTER_OTLP_ENDPOINT" $v.otlpEndpoint
-}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  labels:
    {{- include "tributary.labels" $ctx | nindent 4 }}
  {{- with $v.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "tributary.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: connector
spec:
  replicas: {{ default $v.replicas .replicas }}
  selector:
    matchLabels:
      {{- include "tributary.selector" $selector | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tributary.selector" $selector | nindent 8 }}
      annotations:
        {{- include "tributary.scrapeAnnotations" (dict "ctx" $ctx "port" $v.metrics.port) | nindent 8 }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $name }}
      automountServiceAccountToken: false
      {{- include "tributary.podSecurityContext" $ctx | nindent 6 }}
      {{- include "tributary.podPlacement" $ctx | nindent 6 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      containers:
        - name: connector
          image: {{ include "tributary.image" $ctx }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: [{{ printf "/usr/local/bin/tributary-%s-connector" .kind | quote }}]
          env:
            {{- include "tributary.env" (merge (deepCopy .env) $common) | nindent 12 }}
            {{- with .extraEnv }}
            {{- . | nindent 12 }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: {{ $v.metrics.port }}
              protocol: TCP
          {{- if $v.probes }}
          readinessProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: 10
            failureThreshold: 6
          {{- end }}
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- include "tributary.containerSecurityContext" $ctx | nindent 10 }}
          volumeMounts:
            {{- if $v.basicAuth }}
            - name: gateway-auth
              mountPath: /var/secrets/gateway
              readOnly: true
            {{- end }}
            - name: tmp
              mountPath: /tmp
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- if $v.basicAuth }}
        - name: gateway-auth
          secret:
            secretName: {{ $v.basicAuthSecret }}
        {{- end }}
        - name: tmp
          emptyDir: {}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}-metrics
  labels:
    {{- include "tributary.labels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "tributary.selector" $selector | nindent 4 }}
  ports:
    - name: metrics
      port: {{ $v.metrics.port }}
      targetPort: metrics
      protocol: TCP
{{- if $v.metrics.serviceMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ $name }}
  labels:
    {{- include "tributary.labels" $ctx | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- include "tributary.labels" $ctx | nindent 6 }}
  endpoints:
    - port: metrics
      interval: {{ $v.metrics.serviceMonitor.interval }}
{{- end }}
{{- end }}
