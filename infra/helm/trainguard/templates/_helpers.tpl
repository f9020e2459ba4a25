{{/* Names and labels shared by every object of the release. */}}
{{- define "trainguard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "trainguard.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "trainguard.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "trainguard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Kafka settings both roles share, as environment variables. */}}
{{- define "trainguard.kafkaEnv" -}}
- name: TRAINGUARD_BOOTSTRAP_SERVERS
  value: {{ .root.Values.kafka.bootstrap | quote }}
- name: TRAINGUARD_TOPIC_PREFIX
  value: {{ .root.Values.kafka.topicPrefix | quote }}
- name: TRAINGUARD_KAFKA_SECURITY_PROTOCOL
  value: {{ .root.Values.kafka.securityProtocol | quote }}
{{- if eq .root.Values.kafka.securityProtocol "SASL_SSL" }}
- name: TRAINGUARD_KAFKA_SASL_MECHANISM
  value: {{ .root.Values.kafka.saslMechanism | quote }}
- name: TRAINGUARD_KAFKA_USERNAME
  value: {{ .role.kafkaUser | quote }}
- name: TRAINGUARD_KAFKA_PASSWORD_FILE
  value: /etc/trainguard/kafka/password
{{- end }}
{{- if .root.Values.kafka.caSecret }}
- name: TRAINGUARD_KAFKA_CA_FILE
  value: /etc/trainguard/kafka-ca/ca.pem
{{- end }}
{{- end -}}

{{/* The volumes behind trainguard.kafkaEnv's files, and their mounts. */}}
{{- define "trainguard.kafkaVolumes" -}}
{{- if eq .root.Values.kafka.securityProtocol "SASL_SSL" }}
- name: kafka-password
  secret:
    secretName: {{ required (printf "%s.kafkaPasswordSecret is required with kafka.securityProtocol=SASL_SSL" .name) .role.kafkaPasswordSecret }}
    items: [{key: password, path: password}]
    defaultMode: 0400
{{- end }}
{{- if .root.Values.kafka.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .root.Values.kafka.caSecret }}
    items: [{key: ca.pem, path: ca.pem}]
{{- end }}
{{- end -}}

{{- define "trainguard.kafkaMounts" -}}
{{- if eq .root.Values.kafka.securityProtocol "SASL_SSL" }}
- name: kafka-password
  mountPath: /etc/trainguard/kafka
  readOnly: true
{{- end }}
{{- if .root.Values.kafka.caSecret }}
- name: kafka-ca
  mountPath: /etc/trainguard/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}
