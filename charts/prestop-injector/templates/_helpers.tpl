{{/* Names and labels. Nothing here depends on the cluster or the clock: every render of the same values is the same. */}}
{{- define "prestop-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prestop-injector.fullname" -}}
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

{{- define "prestop-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prestop-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels every object carries besides its selector labels. */}}
{{- define "prestop-injector.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "prestop-injector.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "prestop-injector.labels" -}}
{{ include "prestop-injector.selectorLabels" . }}
{{ include "prestop-injector.commonLabels" . }}
{{- end -}}

{{/*
Labels of the pods that are not the webhook (helm test, uninstall hook): not
the webhook's selector labels, so its Service and monitors never pick them.
Call with (dict "root" $ "component" "test").
*/}}
{{- define "prestop-injector.auxiliaryLabels" -}}
app.kubernetes.io/name: {{ printf "%s-%s" (include "prestop-injector.name" .root) .component | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{ include "prestop-injector.commonLabels" .root }}
{{- end -}}

{{- define "prestop-injector.serviceAccountName" -}}
{{- default (include "prestop-injector.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "prestop-injector.image" -}}
{{- if not .Values.image.repository -}}
{{- fail "image.repository is required: build the image from the repository's Dockerfile, push it where the cluster pulls images from, and set image.repository to it (see the README's install section)" -}}
{{- end -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the serving pair: the run-time one, cert-manager's, or yours. */}}
{{- define "prestop-injector.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "existing" -}}
{{- .Values.certificates.existing.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "prestop-injector.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "prestop-injector.caSecretName" -}}
{{- printf "%s-ca" (include "prestop-injector.fullname" .) -}}
{{- end -}}

{{/* The Service's DNS name, which the API server (and helm test) check the certificate against. */}}
{{- define "prestop-injector.serviceHost" -}}
{{- printf "%s.%s.svc" (include "prestop-injector.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* Where the API server sends reviews: the Service, or webhook.url in development. */}}
{{- define "prestop-injector.webhookURL" -}}
{{- if .Values.webhook.url -}}
{{- .Values.webhook.url -}}
{{- else -}}
{{- printf "https://%s:%d/mutate" (include "prestop-injector.serviceHost" .) (int .Values.service.port) -}}
{{- end -}}
{{- end -}}

{{/*
The serving certificate's names, as JSON {"dnsNames": [...], "ipAddresses": [...]}:
the Service's DNS names, plus the host of webhook.url when set.
*/}}
{{- define "prestop-injector.certNames" -}}
{{- $svc := include "prestop-injector.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $dns := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $ips := list -}}
{{- if .Values.webhook.url -}}
{{- $host := (urlParse .Values.webhook.url).hostname | trimPrefix "[" | trimSuffix "]" -}}
{{- if or (regexMatch "^[0-9.]+$" $host) (contains ":" $host) -}}
{{- $ips = append $ips $host -}}
{{- else -}}
{{- $dns = append $dns $host -}}
{{- end -}}
{{- end -}}
{{- dict "dnsNames" $dns "ipAddresses" $ips | toJson -}}
{{- end -}}

{{/* The caBundle rendered into the webhook configuration, base64; empty when the webhook or cert-manager writes it. */}}
{{- define "prestop-injector.caBundle" -}}
{{- if .Values.webhook.caBundle -}}
{{- .Values.webhook.caBundle | b64enc -}}
{{- else if and (eq .Values.certificates.mode "existing") .Values.certificates.existing.caBundle -}}
{{- .Values.certificates.existing.caBundle | b64enc -}}
{{- end -}}
{{- end -}}

{{/* cert-manager's CA injector annotation of the webhook configuration, as "key: value", or empty. */}}
{{- define "prestop-injector.caInjection" -}}
{{- $existing := .Values.certificates.existing -}}
{{- if .Values.webhook.caBundle -}}
{{- else if eq .Values.certificates.mode "cert-manager" -}}
cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "prestop-injector.tlsSecretName" .) | quote }}
{{- else if and (eq .Values.certificates.mode "existing") $existing.injectCaFromSecret -}}
cert-manager.io/inject-ca-from-secret: {{ $existing.injectCaFromSecret | quote }}
{{- else if and (eq .Values.certificates.mode "existing") $existing.injectCaFrom -}}
cert-manager.io/inject-ca-from: {{ $existing.injectCaFrom | quote }}
{{- end -}}
{{- end -}}

{{/* Pod security settings shared by the webhook, its test pod and its uninstall hook (PSS restricted). */}}
{{- define "prestop-injector.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "prestop-injector.containerSecurityContext" -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}

{{/* Seconds of a duration such as 8760h, 90m or 1h30m (the schema allows only h, m and s). */}}
{{- define "prestop-injector.seconds" -}}
{{- $unit := dict "h" 3600 "m" 60 "s" 1 -}}
{{- $total := 0 -}}
{{- range $part := regexFindAll "[0-9]+[hms]" . -1 -}}
{{- $suffix := regexFind "[hms]$" $part -}}
{{- $total = add $total (mul (trimSuffix $suffix $part | int) (index $unit $suffix)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{- define "prestop-injector.validate" -}}
{{- $shutdown := .Values.shutdown -}}
{{- if ge (int $shutdown.delaySeconds) (int $shutdown.terminationGracePeriodSeconds) -}}
{{- fail (printf "shutdown.delaySeconds (%d) must be less than shutdown.terminationGracePeriodSeconds (%d): the server needs time to answer in-flight admissions after its delay" (int $shutdown.delaySeconds) (int $shutdown.terminationGracePeriodSeconds)) -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.apiServer) -}}
{{- fail "networkPolicy.enabled needs networkPolicy.apiServer: the peers (e.g. an ipBlock of the control plane) the API server calls the webhook from" -}}
{{- end -}}
{{- if and .Values.webhook.caBundle (not .Values.webhook.url) -}}
{{- fail "webhook.caBundle is only for webhook.url; the Service is served with the certificates of certificates.mode" -}}
{{- end -}}
{{- $existing := .Values.certificates.existing -}}
{{- if eq .Values.certificates.mode "existing" -}}
{{- if not $existing.secretName -}}
{{- fail "certificates.mode=existing needs certificates.existing.secretName: a kubernetes.io/tls Secret in the release namespace" -}}
{{- end -}}
{{- $sources := 0 -}}
{{- range $key := list "caBundle" "injectCaFromSecret" "injectCaFrom" -}}
{{- if index $existing $key -}}{{- $sources = add1 $sources -}}{{- end -}}
{{- end -}}
{{- if and (ne $sources 1) (not $.Values.webhook.caBundle) -}}
{{- fail "certificates.mode=existing needs exactly one of certificates.existing.caBundle, .injectCaFromSecret or .injectCaFrom: where the API server gets the CA that verifies the Secret's certificate" -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.certificates.mode "runtime" -}}
{{- $rt := .Values.certificates.runtime -}}
{{- $validity := include "prestop-injector.seconds" $rt.certValidity | int -}}
{{- $renew := include "prestop-injector.seconds" $rt.renewBefore | int -}}
{{- $ca := include "prestop-injector.seconds" $rt.caValidity | int -}}
{{- if ge $renew $validity -}}
{{- fail (printf "certificates.runtime.renewBefore (%s) must be less than certificates.runtime.certValidity (%s)" $rt.renewBefore $rt.certValidity) -}}
{{- end -}}
{{- if lt $ca (mul 3 $validity) -}}
{{- fail (printf "certificates.runtime.caValidity (%s) must be at least 3 x certificates.runtime.certValidity (%s): a CA is replaced when a third of it is left" $rt.caValidity $rt.certValidity) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled -}}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled: choose one, or every pod is scraped twice" -}}
{{- end -}}
{{- if and .Values.hostNetwork (lt (int .Values.containerPorts.webhook) 1024) -}}
{{- fail (printf "containerPorts.webhook %d with hostNetwork: a port below 1024 on the node needs root; choose one from 1024 up that the control plane may reach and the node has free" (int .Values.containerPorts.webhook)) -}}
{{- end -}}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the existing ServiceAccount the webhook runs as" -}}
{{- end -}}
{{- end -}}
