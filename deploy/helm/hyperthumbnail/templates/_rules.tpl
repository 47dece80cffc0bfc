{{/*
Recording and alerting rules (Prometheus rule groups). One definition, used by the PrometheusRule,
by the KEDA query and by prometheus-adapter; tests/test_deploy.py runs `promtool test rules` on it.
Triton's nv_inference_* counters are cumulative: everything here is a rate over a window.
*/}}
{{- define "hyperthumbnail.ruleGroups" -}}
{{- $sel := include "hyperthumbnail.seriesSelector" . }}
{{- $m := .Values.monitoring }}
{{- $models := (.Files.Get "files/server.yaml" | fromYaml).models }}
{{- $requests := join "|" $models.requests }}
{{- $ensembles := join "|" $models.ensembles }}
{{- $fullname := include "hyperthumbnail.fullname" . }}
groups:
  - name: hyperthumbnail.recording
    rules:
      # Seconds a top-level request (encode, decode, encode at bpp) spends queued, summed over the
      # steps it passes through, per pod. An ensemble's own queue counter only holds its scheduling
      # (2 us per request measured on tritonserver 2.51), so ensembles are left out of the
      # numerator; the requests counted are the top-level ones.
      - record: {{ include "hyperthumbnail.queueMetric" . }}
        expr: >-
          sum by (namespace, job, pod) (rate(nv_inference_queue_duration_us{ {{- $sel }}, model!~"{{ $ensembles }}"}[1m])) / 1e6
          / clamp_min(sum by (namespace, job, pod) (rate(nv_inference_request_success{ {{- $sel }}, model=~"{{ $requests }}"}[1m])), 1e-3)
      - record: hyperthumbnail:requests_per_second:rate1m
        expr: >-
          sum by (namespace, job, model) (rate(nv_inference_request_success{ {{- $sel }}, model=~"{{ $requests }}"}[1m]))
      - record: hyperthumbnail:failure_ratio:rate5m
        expr: >-
          sum by (namespace, job) (rate(nv_inference_request_failure{ {{- $sel }}, model=~"{{ $requests }}"}[5m]))
          / clamp_min(sum by (namespace, job) (rate(nv_inference_request_success{ {{- $sel }}, model=~"{{ $requests }}"}[5m]))
          + sum by (namespace, job) (rate(nv_inference_request_failure{ {{- $sel }}, model=~"{{ $requests }}"}[5m])), 1e-3)
  - name: hyperthumbnail.alerts
    rules:
      - alert: HyperThumbnailQueueTimeHigh
        expr: >-
          avg by (namespace, job) ({{ include "hyperthumbnail.queueMetric" . }}{ {{- $sel }}}) > {{ $m.alerts.queueSeconds }}
        for: {{ $m.alerts.for }}
        labels:
          severity: warning
        annotations:
          summary: "{{ $fullname }}: requests wait {{`{{ $value | humanizeDuration }}`}} in Triton's queues"
          description: "Average queue time per request above {{ $m.alerts.queueSeconds }} s for {{ $m.alerts.for }}: the autoscaler is at maxReplicas, or cannot get its metric."
      - alert: HyperThumbnailFailureRateHigh
        expr: >-
          hyperthumbnail:failure_ratio:rate5m{ {{- $sel }}} > {{ $m.alerts.failureRatio }}
        for: {{ $m.alerts.for }}
        labels:
          severity: warning
        annotations:
          summary: "{{ $fullname }}: {{`{{ $value | humanizePercentage }}`}} of requests fail"
          description: "Triton counts failed inference requests (bad input included) above {{ $m.alerts.failureRatio }} of all requests for {{ $m.alerts.for }}."
      - alert: HyperThumbnailReplicasNotReady
        # kube-state-metrics series.
        expr: >-
          kube_deployment_status_replicas_available{namespace="{{ .Release.Namespace }}", deployment="{{ $fullname }}"}
          < kube_deployment_spec_replicas{namespace="{{ .Release.Namespace }}", deployment="{{ $fullname }}"}
        for: {{ $m.alerts.notReadyFor }}
        labels:
          severity: critical
        annotations:
          summary: "{{ $fullname }}: {{`{{ $value }}`}} replicas available, fewer than desired"
          description: "Pods have not become ready for {{ $m.alerts.notReadyFor }}: a model failed to load (see the pod log), or the nodes lack CPU, memory or GPUs."
{{- end }}
