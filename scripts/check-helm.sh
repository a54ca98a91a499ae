#!/usr/bin/env bash
# Checks the Helm chart: helm lint, and helm template piped through
# kubeconform for several value sets, validated offline against JSON schemas
# generated from OpenAPI documents in Go modules (scripts/k8sschema):
#   - k8s.io/kubectl@$KUBECTL_MOD testdata/openapi/swagger.json: built-in kinds
#   - github.com/prometheus-operator/prometheus-operator@$PROMOP_MOD
#     example/prometheus-operator-crd: ServiceMonitor and PrometheusRule
# helm and kubeconform are built from the Go module proxy (go install) into
# $VMI_TOOLS (default ~/.cache/vmi-exporter/tools) once; later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KUBECTL_MOD=v0.37.0
PROMOP_MOD=v0.85.0
KUBE_VERSION=1.33.0

tools=${VMI_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/vmi-exporter/tools}
bin=$tools/bin
mkdir -p "$bin"

install() { # name module version
	local stamp=$bin/.$1-$3
	if [ -x "$bin/$1" ] && [ -e "$stamp" ]; then
		return
	fi
	echo "== go install $2@$3"
	local t0=$SECONDS
	GOBIN=$bin go install "$2@$3"
	touch "$stamp"
	echo "   $1 $3 built in $((SECONDS - t0)) s"
}
install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"

moddir() { # module version -> directory in the module cache
	(cd "$(mktemp -d)" && go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}
schemas=$tools/schemas-kubectl-$KUBECTL_MOD-promop-$PROMOP_MOD
if [ ! -e "$schemas/.done" ]; then
	echo "== JSON schemas from k8s.io/kubectl@$KUBECTL_MOD and prometheus-operator@$PROMOP_MOD"
	kubectl_dir=$(moddir k8s.io/kubectl "$KUBECTL_MOD")
	promop_dir=$(moddir github.com/prometheus-operator/prometheus-operator "$PROMOP_MOD")
	crds=$promop_dir/example/prometheus-operator-crd
	rm -rf "$schemas"
	go run ./scripts/k8sschema -swagger "$kubectl_dir/testdata/openapi/swagger.json" \
		-crd "$crds/monitoring.coreos.com_servicemonitors.yaml" \
		-crd "$crds/monitoring.coreos.com_prometheusrules.yaml" \
		-out "$schemas"
	touch "$schemas/.done"
fi

chart=$repo/helm/vmi-exporter
values=$(mktemp -d)
trap 'rm -rf "$values"' EXIT
cat >"$values/guests.yaml" <<'YAML'
config:
  guests:
    - name: web1
      driver: qemu
      os: linux
      qemu:
        gdb_socket: /var/run/vmi-exporter/qemu/web1.gdb
        qmp_socket: /var/run/vmi-exporter/qemu/web1.qmp
        ram_path: /dev/shm/web1.ram
  rules:
    - name: linux-etc
      enabled: false
serviceMonitor: {enabled: true}
prometheusRule: {enabled: true}
YAML
cat >"$values/xen.yaml" <<'YAML'
backend: xen
config:
  guests:
    - {name: win10, driver: xen, os: windows, xen: {domain: win10}}
serviceMonitor: {enabled: true}
prometheusRule: {enabled: true}
dashboards: {enabled: false}
YAML

cat >"$values/secrets.yaml" <<'YAML'
web: {configSecret: vmi-web}
env:
  - name: VMI_EXPORTER_OTLP__HEADERS__AUTHORIZATION
    valueFrom: {secretKeyRef: {name: otlp-auth, key: authorization}}
envFrom:
  - secretRef: {name: vmi-exporter-env}
YAML

for set in "" "$values/guests.yaml" "$values/xen.yaml" "$values/secrets.yaml"; do
	args=()
	[ -n "$set" ] && args=(-f "$set")
	echo "== helm lint ${set:+-f $(basename "$set")}"
	"$bin/helm" lint --strict "$chart" "${args[@]}"
	echo "== helm template ${set:+-f $(basename "$set")} | kubeconform"
	"$bin/helm" template vmi "$chart" --namespace monitoring --kube-version "$KUBE_VERSION" "${args[@]}" |
		"$bin/kubeconform" -strict -summary -output text \
			-schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" -
done

# The rendered PrometheusRule carries exactly the rules file's groups.
"$bin/helm" template vmi "$chart" --kube-version "$KUBE_VERSION" -f "$values/guests.yaml" \
	--show-only templates/prometheusrule.yaml >"$values/pr.yaml"
if ! grep -q "alert: VMISuspiciousFileWrite" "$values/pr.yaml"; then
	echo "PrometheusRule lacks the rules" >&2
	exit 1
fi
# Secrets are wired by reference: the web config is mounted and named,
# the OTLP header comes from the Secret, and none of it is in the ConfigMap.
"$bin/helm" template vmi "$chart" --kube-version "$KUBE_VERSION" -f "$values/secrets.yaml" >"$values/sec.yaml"
for want in "secretName: vmi-web" "value: /etc/vmi-exporter/web/web-config.yml" "name: otlp-auth" \
	"name: vmi-exporter-env" 'value: ":9860"' "tcpSocket:"; do
	if ! grep -qF "$want" "$values/sec.yaml"; then
		echo "chart with secrets lacks: $want" >&2
		exit 1
	fi
done
# Without a web config the probes use the health endpoints, not /metrics.
"$bin/helm" template vmi "$chart" --kube-version "$KUBE_VERSION" -f "$values/guests.yaml" \
	--show-only templates/daemonset.yaml >"$values/ds.yaml"
for want in "path: /-/healthy" "path: /-/ready"; do
	if ! grep -qF "$want" "$values/ds.yaml"; then
		echo "DaemonSet probes lack: $want" >&2
		exit 1
	fi
done
# A backend other than qemu or xen is refused.
if "$bin/helm" template vmi "$chart" --kube-version "$KUBE_VERSION" --set backend=kvm >/dev/null 2>&1; then
	echo "backend=kvm was accepted" >&2
	exit 1
fi
echo "== chart OK"
