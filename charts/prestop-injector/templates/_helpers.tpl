{{/* Names and labels. */}}
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

{{- define "prestop-injector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "prestop-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
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

{{- define "prestop-injector.tlsSecretName" -}}
{{- printf "%s-tls" (include "prestop-injector.fullname" .) -}}
{{- end -}}

{{- define "prestop-injector.caSecretName" -}}
{{- printf "%s-ca" (include "prestop-injector.fullname" .) -}}
{{- end -}}

{{/* Where the API server sends reviews: the Service, or webhook.url in development. */}}
{{- define "prestop-injector.webhookURL" -}}
{{- if .Values.webhook.url -}}
{{- .Values.webhook.url -}}
{{- else -}}
{{- printf "https://%s.%s.svc:%d/mutate" (include "prestop-injector.fullname" .) .Release.Namespace (int .Values.service.port) -}}
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

{{/*
Self-signed mode: the CA and the serving certificate, computed once per
render (cached on the root context, so every template sees the same pair).
An existing CA is kept (lookup), so `helm upgrade` never changes the CA
bundle. An existing serving certificate is kept too, unless its names or CA
changed or its renewal time has come; then a new one is signed by the same
CA. `helm template` has no cluster: it always makes new ones.
*/}}
{{- define "prestop-injector.selfSignedCerts" -}}
{{- if not (hasKey $ "prestopInjectorCerts") -}}
{{- $cfg := .Values.certificates.selfSigned -}}
{{- $ns := .Release.Namespace -}}
{{- $names := include "prestop-injector.certNames" . | fromJson -}}
{{- $caSecret := lookup "v1" "Secret" $ns (include "prestop-injector.caSecretName" .) -}}
{{- $caData := dig "data" (dict) $caSecret -}}
{{- $ca := dict -}}
{{- if and (index $caData "tls.crt") (index $caData "tls.key") -}}
{{- $ca = buildCustomCert (index $caData "tls.crt") (index $caData "tls.key") -}}
{{- else -}}
{{- $ca = genCA (printf "%s-ca" (include "prestop-injector.fullname" .)) (int $cfg.caValidityDays) -}}
{{- end -}}
{{- $issuedFor := printf "%s|%s|%s" $ca.Cert (join "," $names.dnsNames) (join "," $names.ipAddresses) | sha256sum -}}
{{- $tlsSecret := lookup "v1" "Secret" $ns (include "prestop-injector.tlsSecretName" .) -}}
{{- $tlsData := dig "data" (dict) $tlsSecret -}}
{{- $tlsAnnotations := dig "metadata" "annotations" (dict) $tlsSecret -}}
{{- $now := now | unixEpoch | atoi -}}
{{- $renewAfter := index $tlsAnnotations "prestop-injector.io/renew-after" | default "0" | atoi -}}
{{- $certs := dict "caCert" $ca.Cert "caKey" $ca.Key "issuedFor" $issuedFor -}}
{{- if and (index $tlsData "tls.crt") (index $tlsData "tls.key") (eq (index $tlsAnnotations "prestop-injector.io/issued-for") $issuedFor) (lt $now $renewAfter) -}}
{{- $_ := set $certs "cert" (index $tlsData "tls.crt" | b64dec) -}}
{{- $_ := set $certs "key" (index $tlsData "tls.key" | b64dec) -}}
{{- $_ := set $certs "renewAfter" (toString $renewAfter) -}}
{{- else -}}
{{- $days := int $cfg.certValidityDays -}}
{{- $leaf := genSignedCert (first $names.dnsNames) $names.ipAddresses $names.dnsNames $days $ca -}}
{{- $_ := set $certs "cert" $leaf.Cert -}}
{{- $_ := set $certs "key" $leaf.Key -}}
{{- $_ := set $certs "renewAfter" (toString (add $now (mul 86400 (sub $days (int $cfg.renewBeforeDays))))) -}}
{{- end -}}
{{- $_ := set $ "prestopInjectorCerts" $certs -}}
{{- end -}}
{{- toJson (get $ "prestopInjectorCerts") -}}
{{- end -}}

{{/* The caBundle of the webhook configuration, base64 (empty in cert-manager mode: injected). */}}
{{- define "prestop-injector.caBundle" -}}
{{- if .Values.webhook.caBundle -}}
{{- .Values.webhook.caBundle | b64enc -}}
{{- else if eq .Values.certificates.mode "self-signed" -}}
{{- (include "prestop-injector.selfSignedCerts" . | fromJson).caCert | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Pod security settings shared by the webhook and its test pod (PSS restricted). */}}
{{- define "prestop-injector.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "prestop-injector.containerSecurityContext" -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}

{{- define "prestop-injector.validate" -}}
{{- $shutdown := .Values.shutdown -}}
{{- if ge (int $shutdown.preStopSleepSeconds) (int $shutdown.terminationGracePeriodSeconds) -}}
{{- fail (printf "shutdown.preStopSleepSeconds (%d) must be less than shutdown.terminationGracePeriodSeconds (%d): the server needs time to answer in-flight admissions after SIGTERM" (int $shutdown.preStopSleepSeconds) (int $shutdown.terminationGracePeriodSeconds)) -}}
{{- end -}}
{{- $self := .Values.certificates.selfSigned -}}
{{- if ge (int $self.renewBeforeDays) (int $self.certValidityDays) -}}
{{- fail (printf "certificates.selfSigned.renewBeforeDays (%d) must be less than certificates.selfSigned.certValidityDays (%d)" (int $self.renewBeforeDays) (int $self.certValidityDays)) -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.apiServer) -}}
{{- fail "networkPolicy.enabled needs networkPolicy.apiServer: the peers (e.g. an ipBlock of the control plane) the API server calls the webhook from" -}}
{{- end -}}
{{- if and .Values.webhook.caBundle (not .Values.webhook.url) -}}
{{- fail "webhook.caBundle is only for webhook.url; the Service is served with the chart's own certificate" -}}
{{- end -}}
{{- end -}}
