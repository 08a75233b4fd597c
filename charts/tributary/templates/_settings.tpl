{{/* Settings the gateway and the standalone queue worker share: the async queue's. */}}
{{- define "tributary.queueSettings" -}}
{{- $v := .Values -}}
{{- dict
  "nats_url" (ternary $v.nats.external.url "" $v.nats.external.enabled)
  "queue_path" (ternary "" "/var/lib/tributary/queue.db" $v.nats.external.enabled)
  "ack_wait" $v.queue.ackWait
  "max_inflight" $v.queueWorker.maxInflight
  "max_retry_attempts" $v.queueWorker.maxRetryAttempts
  "initial_retry_wait" $v.queueWorker.initialRetryWait
  "max_retry_wait" $v.queueWorker.maxRetryWait
  "basic_auth" $v.basic_auth
  "secret_mount_path" "/var/openfaas/secrets"
  "upstream_timeout" $v.gateway.upstreamTimeout
  "log_format" $v.logFormat
  "OTEL_EXPORTER_OTLP_ENDPOINT" $v.otlpEndpoint
  | toJson -}}
{{- end }}

{{/* The gateway's own settings. */}}
{{- define "tributary.gatewaySettings" -}}
{{- $v := .Values -}}
{{- $g := $v.gateway -}}
{{- $f := $v.faasnetes -}}
{{- dict
  "port" 8080
  "bind_address" "0.0.0.0"
  "state_dir" "/var/lib/tributary"
  "provider" "kubernetes"
  "function_namespace" $v.functionNamespace
  "read_timeout" $g.readTimeout
  "max_body_size" $g.maxBodySize
  "max_connections" $g.maxConnections
  "http_workers" $g.httpWorkers
  "shutdown_grace" $g.shutdownGrace
  "max_replicas" $g.maxReplicas
  "callback_allow" $g.callbackAllow
  "http_probe" $f.httpProbe
  "readiness_probe_initial_delay_seconds" $f.readinessProbe.initialDelaySeconds
  "readiness_probe_period_seconds" $f.readinessProbe.periodSeconds
  "readiness_probe_timeout_seconds" $f.readinessProbe.timeoutSeconds
  "image_pull_policy" $f.imagePullPolicy
  "set_nonroot_user" $f.setNonRootUser
  "queue_worker" (not $v.nats.external.enabled)
  "autoscaler" $v.autoscaler.enabled
  "autoscaler_interval" $v.autoscaler.interval
  "scale_down_window" $v.autoscaler.scaleDownWindow
  | merge (include "tributary.queueSettings" . | fromJson) | toJson -}}
{{- end }}
